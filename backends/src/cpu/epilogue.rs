//! Epilogues: the elementwise statements right after a sparse product that the wide kernel
//! computes (`NAME_spmm_*`) — the hoisted projection's add, the bias add and the activation of
//! a gate layer — applied to each column of the product in registers before its store, instead
//! of one pass each over the product's buffer (docs/kernels.md, "Epilogues").
//!
//! A chain is fused when every buffer it passes through is a temporary that only the chain's
//! next statement reads, and each of its statements takes the whole buffer in the product's
//! element order; the results are the same bits (the same additions in the same order, and the
//! activations of `NAME_act_*`). Only a program compiled for one thread is planned: a thread's
//! part splits the product by columns and the elementwise statements by elements, which do not
//! line up.

use super::layout::Layout;
use hlstm_ir::kernel::verify::{bcast_strides, matmul_dims, overlap};
use hlstm_ir::kernel::{BufId, BufKind, Program, Stmt, Storage, View, Weight};
use hlstm_ir::{Act, BinOp};
use std::collections::HashMap;

/// What the product at one statement applies before its stores.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Epilogue {
    /// Up to two addends, each as a view of dims [N, M] (column j, row i): rows contiguous
    /// (stride 1) or one value per column (stride 0).
    pub adds: Vec<View>,
    /// `NAME_spmm_*`'s activation code: 1 sigmoid, 2 tanh, 3 relu (0: none).
    pub act: i64,
    /// Where the chain's last statement writes, as a view of dims [M, N] with rows contiguous.
    pub out: View,
    /// How many statements after the product the epilogue replaces.
    pub fused: usize,
}

/// The epilogues of `p`'s products, by the address of the product's statement.
pub(crate) fn plan(p: &Program, l: &Layout) -> HashMap<usize, Epilogue> {
    let mut found = HashMap::new();
    if p.batch_axes.is_some() {
        // Run-time batches: the rows of a product are the call's.
        return found;
    }
    let (reads, writes) = counts(p);
    plan_body(p, l, &p.body, 1, &reads, &writes, &mut found);
    found
}

/// How many views read and write each buffer, anywhere in the program.
fn counts(p: &Program) -> (Vec<usize>, Vec<usize>) {
    let (mut reads, mut writes) = (vec![0; p.buffers.len()], vec![0; p.buffers.len()]);
    hlstm_ir::kernel::visit::walk(&p.body, &mut |s, _| {
        for v in s.inputs() {
            if let Storage::Buf(b) = v.storage {
                reads[b.0] += 1;
            }
        }
        if let Some(Storage::Buf(b)) = s.output().map(|v| v.storage) {
            writes[b.0] += 1;
        }
    });
    (reads, writes)
}

fn plan_body(
    p: &Program,
    l: &Layout,
    body: &[Stmt],
    trip: usize,
    reads: &[usize],
    writes: &[usize],
    found: &mut HashMap<usize, Epilogue>,
) {
    for (i, s) in body.iter().enumerate() {
        match s {
            Stmt::Loop { body, trip, .. } => plan_body(p, l, body, *trip, reads, writes, found),
            Stmt::Start { body } => plan_body(p, l, body, trip, reads, writes, found),
            Stmt::MatMul {
                out,
                a,
                w,
                rows_per_step: None,
            } => {
                if let Some(e) = chain(p, l, out, a, w, &body[i + 1..], trip, reads, writes) {
                    found.insert(s as *const Stmt as usize, e);
                }
            }
            _ => {}
        }
    }
}

/// The epilogue of the product `out = a x w` from the statements after it, if any fuse.
#[allow(clippy::too_many_arguments)]
fn chain(
    p: &Program,
    l: &Layout,
    out: &View,
    a: &View,
    w: &Weight,
    after: &[Stmt],
    trip: usize,
    reads: &[usize],
    writes: &[usize],
) -> Option<Epilogue> {
    let (m, _, n) = matmul_dims(p, out, a, w).ok()?;
    if !l.takes_spmm(m, w)
        || overlap(out, a, trip)
        || w.view().is_some_and(|v| overlap(out, v, trip))
    {
        return None;
    }
    // The product: a temporary [M, N] stored column after column, rows contiguous.
    let product = match out.storage {
        Storage::Buf(b) if out.dims == [m, n] && out.strides == [1, m as isize] => b,
        _ => return None,
    };
    if !passable(p, l, product, out, m, n, reads, writes) {
        return None;
    }
    let mut cur = product;
    let (mut adds, mut act, mut fused, mut last) = (Vec::new(), 0, 0, None);
    for s in after {
        let (next_out, addend, code, order) = match s {
            Stmt::Binary {
                op: BinOp::Add,
                out,
                a,
                b,
            } if act == 0 && adds.len() < 2 => {
                let (x, other, order) = match (whole(a, cur, m, n), whole(b, cur, m, n)) {
                    (Some(o), _) => (a, b, o),
                    (None, Some(o)) => (b, a, o),
                    (None, None) => break,
                };
                if other.storage == Storage::Buf(cur) || out.dims != x.dims {
                    break;
                }
                let Some(addend) = addend_view(other, &out.dims, order, m, n) else {
                    break;
                };
                (out, Some(addend), 0, order)
            }
            Stmt::Unary { op, out, x } if act == 0 && out.dims == x.dims => {
                let Some(order) = whole(x, cur, m, n) else {
                    break;
                };
                let code = match op {
                    Act::Sigmoid => 1,
                    Act::Tanh => 2,
                    Act::Relu => 3,
                    _ => break,
                };
                (out, None, code, order)
            }
            _ => break,
        };
        if next_out.storage == Storage::Buf(cur) {
            break;
        }
        let Some(final_view) = columns_view(next_out, order, m) else {
            break;
        };
        // The final output may not be something the product or the addends read.
        let reads_it = |v: &View| v.storage == next_out.storage;
        if reads_it(a) || w.view().is_some_and(reads_it) || adds.iter().chain(&addend).any(reads_it)
        {
            break;
        }
        adds.extend(addend);
        if code != 0 {
            act = code;
        }
        fused += 1;
        last = Some(final_view);
        // The chain goes on through the new value only if it is a passable temporary too.
        match next_out.storage {
            Storage::Buf(b) if passable(p, l, b, next_out, m, n, reads, writes) => cur = b,
            _ => break,
        }
    }
    Some(Epilogue {
        adds,
        act,
        out: last?,
        fused,
    })
}

/// Whether a chain may pass through `b` (written by `v`): a temporary the program writes once,
/// reads once, does not compute in an output, and that `v` writes whole in the product's
/// order.
#[allow(clippy::too_many_arguments)]
fn passable(
    p: &Program,
    l: &Layout,
    b: BufId,
    v: &View,
    m: usize,
    n: usize,
    reads: &[usize],
    writes: &[usize],
) -> bool {
    let buf = &p.buffers[b.0];
    buf.kind == BufKind::Temp
        && buf.len() == m * n
        && p.seq_lens != Some(b)
        && reads[b.0] == 1
        && writes[b.0] == 1
        && !l.in_output.contains_key(&b)
        && whole(v, b, m, n).is_some()
}

/// How a statement's views index the product's elements: by (row i, column j), by (column
/// j, row i), or flat (element j * M + i).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    RowsFirst,
    ColumnsFirst,
    Flat,
}

/// The order in which `v` is all of buffer `b` (M x N elements) in the product's element
/// order, element (row i, column j) at j * M + i: [M, N] with strides [1, M], [N, M] with
/// strides [M, 1], or flat.
fn whole(v: &View, b: BufId, m: usize, n: usize) -> Option<Order> {
    let mi = m as isize;
    if v.storage != Storage::Buf(b) || v.offset != 0 || v.step_stride != 0 {
        return None;
    }
    if v.dims == [m, n] && v.strides == [1, mi] {
        Some(Order::RowsFirst)
    } else if v.dims == [n, m] && v.strides == [mi, 1] {
        Some(Order::ColumnsFirst)
    } else if v.dims == [m * n] && v.strides == [1] {
        Some(Order::Flat)
    } else {
        None
    }
}

/// The [M, N] view (rows contiguous) of what `out` writes, a statement's output in `order`.
fn columns_view(out: &View, order: Order, m: usize) -> Option<View> {
    let (rows, cols) = match order {
        Order::RowsFirst => (out.strides[0], out.strides[1]),
        Order::ColumnsFirst => (out.strides[1], out.strides[0]),
        Order::Flat => (out.strides[0], out.strides[0] * m as isize),
    };
    (rows == 1 && cols >= m as isize).then(|| View {
        dims: vec![m, out.len() / m],
        strides: vec![1, cols],
        ..out.clone()
    })
}

/// The addend `x` of a statement whose output has `dims` in `order`, as an [N, M] view whose
/// rows are contiguous (stride 1) or broadcast (stride 0).
fn addend_view(x: &View, dims: &[usize], order: Order, m: usize, n: usize) -> Option<View> {
    let s = bcast_strides(x, dims).ok()?;
    let (col, row) = match order {
        Order::RowsFirst => (s[1], s[0]),
        Order::ColumnsFirst => (s[0], s[1]),
        Order::Flat => (s[0] * m as isize, s[0]),
    };
    (row == 0 || row == 1).then(|| View {
        dims: vec![n, m],
        strides: vec![col, row],
        ..x.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product of eight rows by a sparse constant, its bias add and sigmoid, then `rest`.
    fn program(rest: &str) -> Program {
        let text = format!(
            r#"program "e"
buffer %0 "X" input 0 [8,3]
buffer %1 "Y" output 0 [2,8]
buffer %2 "p" temp [8,2]
buffer %3 "q" temp [8,2]
buffer %4 "Z" output 1 [2,8]
const $0 "w" [3,2] nnz 3 [1.0, 0.0, 0.0, 2.0, 3.0, 0.0]
const $1 "b" [2] nnz 2 [0.5, -0.5]
matmul %2[+0; 8x2 : 1,8] = %0[+0; 8x3 : 3,1] x $0 (sparse-csr)
{rest}"#
        );
        hlstm_ir::kernel::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn planned(p: &Program) -> Vec<Epilogue> {
        let l = crate::cpu::layout::layout(p, true).expect("layout");
        plan(p, &l).into_values().collect()
    }

    const BIAS: &str = "add %3[+0; 2x8 : 8,1] = %2[+0; 2x8 : 8,1], $1[+0; 2x8 : 1,0]\n";

    #[test]
    fn the_bias_add_and_the_activation_fuse_into_the_product() {
        let p = program(&format!("{BIAS}sigmoid %1[+0; 16 : 1] = %3[+0; 16 : 1]\n"));
        let e = planned(&p);
        assert_eq!(e.len(), 1);
        let e = &e[0];
        assert_eq!((e.fused, e.act, e.adds.len()), (2, 1, 1));
        // The bias: one value per column (row stride 0), columns 1 apart.
        assert_eq!(e.adds[0].strides, vec![1, 0]);
        assert_eq!(
            e.adds[0].storage,
            Storage::Const(hlstm_ir::kernel::ConstId(1))
        );
        // The sigmoid's output, rows contiguous, columns 8 apart.
        assert_eq!(e.out.storage, Storage::Buf(BufId(1)));
        assert_eq!(
            (e.out.dims.clone(), e.out.strides.clone()),
            (vec![8, 2], vec![1, 8])
        );
    }

    #[test]
    fn a_chain_stops_at_a_value_something_else_reads() {
        // q is read twice: the add writes it, and the sigmoid stays a statement of its own.
        let p = program(&format!(
            "{BIAS}sigmoid %1[+0; 16 : 1] = %3[+0; 16 : 1]\ncopy %4[+0; 16 : 1] = %3[+0; 16 : 1]\n"
        ));
        let e = planned(&p);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].fused, e[0].act), (1, 0));
        assert_eq!(e[0].out.storage, Storage::Buf(BufId(3)));
        // The product itself read twice: nothing fuses.
        let p = program(&format!("{BIAS}copy %4[+0; 16 : 1] = %2[+0; 16 : 1]\n"));
        assert!(planned(&p).is_empty());
    }

    #[test]
    fn only_adds_then_one_activation_fuse_in_place_of_whole_values() {
        // An activation first, then an add: the add is not part of the epilogue.
        let p = program(
            "tanh %3[+0; 16 : 1] = %2[+0; 16 : 1]\nadd %1[+0; 2x8 : 8,1] = %3[+0; 2x8 : 8,1], $1[+0; 2x8 : 1,0]\n",
        );
        let e = planned(&p);
        assert_eq!((e[0].fused, e[0].act, e[0].adds.len()), (1, 2, 0));
        // A statement on part of the product, or writing its operand in place, does not fuse.
        let p = program("relu %3[+0; 8 : 1] = %2[+0; 8 : 1]\n");
        assert!(planned(&p).is_empty());
        let p = program("relu %2[+0; 16 : 1] = %2[+0; 16 : 1]\n");
        assert!(planned(&p).is_empty());
        // A multiplication is not an epilogue.
        let p = program("mul %1[+0; 16 : 1] = %2[+0; 16 : 1], %2[+0; 16 : 1]\n");
        assert!(planned(&p).is_empty());
    }

    #[test]
    fn a_dense_product_has_no_epilogue() {
        let p = program(&format!("{BIAS}sigmoid %1[+0; 16 : 1] = %3[+0; 16 : 1]\n"));
        let p = hlstm_ir::kernel::print(&p).replace("(sparse-csr)", "(dense)");
        let p = hlstm_ir::kernel::parse(&p).expect("parses");
        assert!(planned(&p).is_empty());
    }
}
