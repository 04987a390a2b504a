//! The verifier of kernel programs, which every backend runs before generating code: the
//! inputs and outputs are the buffers of their numbers, every view has as many strides as dims
//! and stays inside its storage at every step of its loop, no statement writes an input or a
//! constant, matmul operands agree in shape, elementwise operands broadcast to the result
//! (numpy rules, right-aligned, as the interpreter reads them), and a softmax does not overlap
//! its input unless it is computed in place. An error names the statement (`statement 2.3
//! (matmul ...)`, see [`visit::Site`]).
//!
//! What a backend cannot generate beyond this (the PTX backend's implicit broadcasts, a view
//! too large for its 32-bit indexing) it checks itself.

use super::visit;
use super::{BufId, BufKind, Program, Stmt, Storage, View, Weight, print_stmt};

/// Checks a program (see the module's documentation).
pub fn verify(p: &Program) -> Result<(), String> {
    for (k, id) in p.inputs.iter().enumerate() {
        match p.buffers.get(id.0).map(|b| b.kind) {
            Some(BufKind::Input(j)) if j == k => {}
            _ => return Err(format!("input {k} is not an input buffer of that number")),
        }
    }
    for (k, id) in p.outputs.iter().enumerate() {
        match p.buffers.get(id.0).map(|b| b.kind) {
            Some(BufKind::Output(j)) if j == k => {}
            _ => return Err(format!("output {k} is not an output buffer of that number")),
        }
    }
    for (i, b) in p.buffers.iter().enumerate() {
        let listed = match b.kind {
            BufKind::Input(k) => p.inputs.get(k) == Some(&BufId(i)),
            BufKind::Output(k) => p.outputs.get(k) == Some(&BufId(i)),
            BufKind::Temp => true,
        };
        if !listed {
            return Err(format!(
                "buffer %{i} is not in the program's inputs or outputs"
            ));
        }
        if b.dims
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
            .is_none_or(|n| n > 1 << 28)
        {
            return Err(format!("buffer %{i} is too large"));
        }
    }
    visit::try_walk(&p.body, &mut |s, site| {
        check_stmt(p, s, site.trip).map_err(|e| format!("{} ({}): {e}", site, print_stmt(s)))
    })
}

/// Checks one statement whose views range over steps 0..trip.
fn check_stmt(p: &Program, s: &Stmt, trip: usize) -> Result<(), String> {
    for v in s.views() {
        check_view(p, v, trip)?;
    }
    if let Some(out) = s.output() {
        check_write(p, out)?;
    }
    match s {
        Stmt::MatMul { out, a, w, .. } => {
            matmul_dims(p, out, a, w)?;
        }
        Stmt::Unary { out, x, .. } | Stmt::Clip { out, x, .. } | Stmt::Copy { out, x } => {
            bcast_strides(x, &out.dims)?;
        }
        Stmt::Binary { out, a, b, .. } => {
            bcast_strides(a, &out.dims)?;
            bcast_strides(b, &out.dims)?;
        }
        Stmt::Softmax { out, x, .. } => {
            if x.dims != out.dims || out.dims.is_empty() {
                return Err(format!(
                    "input dims {:?} differ from output dims {:?}",
                    x.dims, out.dims
                ));
            }
            if out != x && overlap(out, x, trip) {
                return Err("the output overlaps the input".into());
            }
        }
        Stmt::Loop { .. } | Stmt::Start { .. } | Stmt::Barrier => {}
    }
    Ok(())
}

/// Right-aligned broadcast of `v` to `dims` (numpy rules, as the interpreter reads operands):
/// the strides of `v` over `dims`.
pub fn bcast_strides(v: &View, dims: &[usize]) -> Result<Vec<isize>, String> {
    if v.dims.len() != v.strides.len() {
        return Err(format!(
            "a view has {} dims and {} strides",
            v.dims.len(),
            v.strides.len()
        ));
    }
    if v.dims == dims {
        return Ok(v.strides.clone());
    }
    let r = dims.len();
    if v.dims.len() > r {
        return Err(format!("cannot broadcast {:?} to {dims:?}", v.dims));
    }
    let pad = r - v.dims.len();
    let mut s = vec![0isize; r];
    for d in 0..v.dims.len() {
        if v.dims[d] == dims[pad + d] {
            s[pad + d] = v.strides[d];
        } else if v.dims[d] != 1 {
            return Err(format!("cannot broadcast {:?} to {dims:?}", v.dims));
        }
    }
    Ok(s)
}

/// The smallest and largest element index a view touches over t in 0..trip; None when it
/// touches none.
pub fn span(v: &View, trip: usize) -> Option<(i128, i128)> {
    if v.dims.contains(&0) || trip == 0 {
        return None;
    }
    let mut lo = v.offset as i128;
    let mut hi = lo;
    let st = v.step_stride as i128 * (trip as i128 - 1);
    lo += st.min(0);
    hi += st.max(0);
    for (d, s) in v.dims.iter().zip(&v.strides) {
        let e = (*d as i128 - 1) * *s as i128;
        lo += e.min(0);
        hi += e.max(0);
    }
    Some((lo, hi))
}

/// Elements of a buffer or constant.
pub fn storage_len(p: &Program, s: Storage) -> usize {
    match s {
        Storage::Buf(b) => p.buffers[b.0].len(),
        Storage::Const(c) => p.consts[c.0].data.len(),
    }
}

/// A view well formed, of existing storage, inside it at every step t in 0..trip, and with
/// byte offsets well inside i32 immediates and i64 arithmetic.
pub fn check_view(p: &Program, v: &View, trip: usize) -> Result<(), String> {
    if v.dims.len() != v.strides.len() {
        return Err(format!(
            "a view has {} dims and {} strides",
            v.dims.len(),
            v.strides.len()
        ));
    }
    match v.storage {
        Storage::Buf(b) if b.0 >= p.buffers.len() => {
            return Err(format!("buffer %{} does not exist", b.0));
        }
        Storage::Const(c) if c.0 >= p.consts.len() => {
            return Err(format!("constant ${} does not exist", c.0));
        }
        _ => {}
    }
    let len = storage_len(p, v.storage) as i128;
    if let Some((lo, hi)) = span(v, trip) {
        if lo < 0 || hi >= len {
            return Err(format!(
                "a view reaches elements {lo}..={hi} of a storage of {len}"
            ));
        }
        if hi * 4 >= i32::MAX as i128 || lo * 4 <= i32::MIN as i128 {
            return Err("a view is too large".into());
        }
    }
    Ok(())
}

/// A view a statement may write: not a constant, not an input.
fn check_write(p: &Program, v: &View) -> Result<(), String> {
    match v.storage {
        Storage::Const(_) => Err("writes a constant".into()),
        Storage::Buf(b) => match p.buffers[b.0].kind {
            BufKind::Input(_) => Err(format!("writes input buffer %{}", b.0)),
            _ => Ok(()),
        },
    }
}

/// The (M, K, N) of a matmul, checked: `out` [M, N] and `a` [M, K] of rank 2, the weight
/// [K, N] (a masked weight's pattern too).
pub fn matmul_dims(
    p: &Program,
    out: &View,
    a: &View,
    w: &Weight,
) -> Result<(usize, usize, usize), String> {
    if out.dims.len() != 2 || a.dims.len() != 2 {
        return Err(format!(
            "matmul: out {:?} and a {:?} must have rank 2",
            out.dims, a.dims
        ));
    }
    let (m, k, n) = (out.dims[0], a.dims[1], out.dims[1]);
    if a.dims[0] != m {
        return Err(format!("matmul: a {:?} vs out {:?}", a.dims, out.dims));
    }
    match w {
        Weight::Const(c, _) => {
            let cst = p
                .consts
                .get(c.0)
                .ok_or_else(|| format!("matmul: constant ${} does not exist", c.0))?;
            if cst.data.len() != k * n {
                return Err(format!(
                    "matmul: constant ${} has {} elements, expected [{k},{n}]",
                    c.0,
                    cst.data.len()
                ));
            }
        }
        Weight::View(v) => {
            if v.dims != [k, n] {
                return Err(format!("matmul: weight {:?}, expected [{k},{n}]", v.dims));
            }
        }
        Weight::Masked(v, c) => {
            if v.dims != [k, n] {
                return Err(format!("matmul: weight {:?}, expected [{k},{n}]", v.dims));
            }
            if p.consts.get(c.0).map(|c| c.data.len()) != Some(k * n) {
                return Err(format!("matmul: pattern ${} is not [{k},{n}]", c.0));
            }
        }
    }
    Ok((m, k, n))
}

/// Whether two views of one storage may touch a common element (by their spans over steps
/// 0..trip).
pub fn overlap(a: &View, b: &View, trip: usize) -> bool {
    if a.storage != b.storage {
        return false;
    }
    // With equal step strides the distance is the same every step: compare one step.
    let tr = if a.step_stride == b.step_stride {
        1
    } else {
        trip
    };
    match (span(a, tr), span(b, tr)) {
        (Some((l1, h1)), Some((l2, h2))) => l1 <= h2 && l2 <= h1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BinOp;
    use crate::kernel::{ConstId, LoopRun, Strategy};

    fn v(b: BufId, off: isize, dims: &[usize], strides: &[isize], step: isize) -> View {
        View {
            storage: Storage::Buf(b),
            offset: off,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            step_stride: step,
        }
    }

    /// x [4,3] input, y [4,3] output, h [3] temp; a loop of 4 steps adds x's rows into h and
    /// copies h to y's rows.
    fn sample() -> (Program, [BufId; 3]) {
        let mut p = Program::default();
        let x = p.add_buffer("x", BufKind::Input(0), &[4, 3]);
        let y = p.add_buffer("y", BufKind::Output(0), &[4, 3]);
        let h = p.add_buffer("h", BufKind::Temp, &[3]);
        p.inputs = vec![x];
        p.outputs = vec![y];
        p.body = vec![Stmt::Loop {
            run: LoopRun::Fixed,
            trip: 4,
            reverse: false,
            body: vec![
                Stmt::Binary {
                    op: BinOp::Add,
                    out: View::whole(h, &[3]),
                    a: View::whole(h, &[3]),
                    b: v(x, 0, &[3], &[1], 3),
                },
                Stmt::Copy {
                    out: v(y, 0, &[3], &[1], 3),
                    x: View::whole(h, &[3]),
                },
            ],
        }];
        (p, [x, y, h])
    }

    fn loop_body(p: &mut Program) -> &mut Vec<Stmt> {
        match &mut p.body[0] {
            Stmt::Loop { body, .. } => body,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_well_formed_program_passes() {
        assert_eq!(verify(&sample().0), Ok(()));
    }

    #[test]
    fn spans_and_overlap() {
        let (p, [x, y, _]) = sample();
        let a = v(y, 0, &[3], &[1], 3);
        let b = v(y, 3, &[3], &[1], 3);
        assert!(!overlap(&a, &b, 4), "same step stride: one row apart");
        let c = v(y, 3, &[3], &[1], 0);
        assert!(overlap(&a, &c, 4), "row 1 is written at t = 1");
        assert!(!overlap(&a, &v(x, 0, &[3], &[1], 3), 4), "other storage");
        assert!(check_view(&p, &v(y, 0, &[3], &[1], 3), 4).is_ok());
        assert!(check_view(&p, &v(y, 0, &[3], &[1], 3), 5).is_err());
        assert!(check_view(&p, &v(y, 2, &[3], &[-1], 0), 1).is_ok());
        assert!(check_view(&p, &v(y, 1, &[3], &[-1], 0), 1).is_err());
    }

    /// Verifies `p` changed by `f`; returns the error.
    fn err(f: impl FnOnce(&mut Program, [BufId; 3])) -> String {
        let (mut p, ids) = sample();
        f(&mut p, ids);
        verify(&p).expect_err("verify rejects it")
    }

    #[test]
    fn a_view_out_of_bounds_is_named_by_its_statement() {
        // y's rows at steps 0..4 from offset 3: step 3 reaches 12..=14 of 12.
        let e = err(|p, [_, y, _]| {
            let Stmt::Copy { out, .. } = &mut loop_body(p)[1] else {
                unreachable!()
            };
            *out = v(y, 3, &[3], &[1], 3);
        });
        assert!(
            e.starts_with("statement 1.2 (copy %1[+3 +3t; 3 : 1]"),
            "{e}"
        );
        assert!(
            e.ends_with("a view reaches elements 3..=14 of a storage of 12"),
            "{e}"
        );
    }

    #[test]
    fn wrong_arities_and_shapes() {
        let e = err(|p, [_, _, h]| {
            let Stmt::Binary { a, .. } = &mut loop_body(p)[0] else {
                unreachable!()
            };
            *a = v(h, 0, &[3], &[1, 1], 0);
        });
        assert!(
            e.contains("statement 1.1") && e.contains("1 dims and 2 strides"),
            "{e}"
        );
        let e = err(|p, [_, _, h]| {
            let Stmt::Copy { x, .. } = &mut loop_body(p)[1] else {
                unreachable!()
            };
            *x = v(h, 0, &[2], &[1], 0);
        });
        assert!(e.contains("cannot broadcast [2] to [3]"), "{e}");
        // A matmul of rank 1, and one whose constant has the wrong size.
        let e = err(|p, [_, _, h]| {
            let c = p.add_const("w", &[3, 3], vec![0.0; 9]);
            p.body.push(Stmt::MatMul {
                out: View::whole(h, &[3]),
                a: View::whole(h, &[3]),
                w: Weight::Const(c, Strategy::Dense),
                rows_per_step: None,
            });
        });
        assert!(e.starts_with("statement 2 (matmul"), "{e}");
        assert!(e.contains("must have rank 2"), "{e}");
        let e = err(|p, [_, _, h]| {
            let c = p.add_const("w", &[3, 2], vec![0.0; 6]);
            p.body.push(Stmt::MatMul {
                out: View::whole(h, &[1, 3]),
                a: View::whole(h, &[1, 3]),
                w: Weight::Const(c, Strategy::SparseCsr),
                rows_per_step: None,
            });
        });
        assert!(
            e.contains("constant $0 has 6 elements, expected [3,3]"),
            "{e}"
        );
        let e = err(|p, [_, _, h]| {
            p.body.push(Stmt::Softmax {
                out: View::whole(h, &[3]),
                x: v(h, 0, &[3], &[0], 0),
                log: false,
            });
        });
        assert!(e.contains("the output overlaps the input"), "{e}");
    }

    #[test]
    fn writes_to_inputs_and_constants_and_missing_storage() {
        let e = err(|p, [x, _, h]| {
            p.body.push(Stmt::Copy {
                out: View::whole(x, &[3]),
                x: View::whole(h, &[3]),
            })
        });
        assert!(e.contains("statement 2 (copy") && e.ends_with("writes input buffer %0"));
        let e = err(|p, [_, _, h]| {
            let c = p.add_const("k", &[3], vec![1.0; 3]);
            p.body.push(Stmt::Copy {
                out: View::constant(c, &[3]),
                x: View::whole(h, &[3]),
            })
        });
        assert!(e.ends_with("writes a constant"), "{e}");
        let e = err(|p, [_, _, h]| {
            p.body.push(Stmt::Copy {
                out: View::whole(h, &[3]),
                x: View::constant(ConstId(5), &[3]),
            })
        });
        assert!(e.ends_with("constant $5 does not exist"), "{e}");
        let e = err(|p, _| p.inputs.clear());
        assert_eq!(e, "buffer %0 is not in the program's inputs or outputs");
        let e = err(|p, [_, y, _]| p.inputs = vec![y]);
        assert_eq!(e, "input 0 is not an input buffer of that number");
    }
}
