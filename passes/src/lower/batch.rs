//! The batch chosen per call (docs/kernels.md, "Run-time batch"): a program compiled for a
//! batch B can run any batch b <= B, zero-padded to B by the caller's library, when its batch
//! elements are independent: every output element depends on the input elements of its own
//! batch element only (and on constants). [`dynamic_batch`] checks that on the kernel IR and
//! records the batch axes in [`Program::batch_axes`].
//!
//! The check runs the program once on labels instead of numbers: each element of each buffer
//! holds which batch element it depends on (none, one, or several), inputs labelled by their
//! batch axis, and every statement joins the labels of what it reads into what it writes, as
//! the kernel interpreter would compute values (a matmul row joins its input row with the
//! weight's columns). Time loops run their longest length. It is exact for the statements
//! the lowering makes, and conservative: a model that mixes batch elements anywhere
//! (a reduction over the batch, a batch-norm in training mode) is refused with the output it
//! reaches.

use hlstm_ir::kernel::{BatchAxes, LoopRun, Program, Stmt, Storage, View, Weight};

/// No dependence on the batch.
const FREE: u32 = 0;
/// A dependence on several batch elements.
const MIXED: u32 = u32::MAX;

fn join(a: u32, b: u32) -> u32 {
    match (a, b) {
        (FREE, x) | (x, FREE) => x,
        (x, y) if x == y => x,
        _ => MIXED,
    }
}

/// The label of each element of a tensor of `dims` whose batch axis is `axis` (batch element
/// i is label i + 1).
fn axis_labels(dims: &[usize], axis: Option<usize>) -> Vec<u32> {
    let n: usize = dims.iter().product();
    match axis {
        None => vec![FREE; n],
        Some(a) => {
            let inner: usize = dims[a + 1..].iter().product();
            let b = dims[a];
            (0..n).map(|i| ((i / inner) % b) as u32 + 1).collect()
        }
    }
}

struct Labels<'a> {
    p: &'a Program,
    bufs: Vec<Vec<u32>>,
}

impl Labels<'_> {
    fn read(&self, v: &View, t: usize) -> Result<Vec<u32>, String> {
        match v.storage {
            Storage::Const(_) => Ok(vec![FREE; v.dims.iter().product()]),
            Storage::Buf(b) => v
                .offsets(t)
                .into_iter()
                .map(|o| {
                    usize::try_from(o)
                        .ok()
                        .and_then(|o| self.bufs[b.0].get(o).copied())
                        .ok_or_else(|| {
                            format!("a view reads outside '{}'", self.p.buffers[b.0].name)
                        })
                })
                .collect(),
        }
    }

    fn write(&mut self, v: &View, t: usize, labels: &[u32]) -> Result<(), String> {
        let Storage::Buf(b) = v.storage else {
            return Err("a statement writes a constant".into());
        };
        let offs = v.offsets(t);
        if offs.len() != labels.len() {
            return Err("a statement's views differ in size".into());
        }
        for (o, l) in offs.into_iter().zip(labels) {
            let slot = usize::try_from(o)
                .ok()
                .and_then(|o| self.bufs[b.0].get_mut(o))
                .ok_or_else(|| format!("a view writes outside '{}'", self.p.buffers[b.0].name))?;
            *slot = *l;
        }
        Ok(())
    }

    fn exec(&mut self, body: &[Stmt], t: usize) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::MatMul { out, a, w, .. } => {
                    let (m, k) = (a.dims[0], a.dims[1]);
                    let n = out.dims[1];
                    let la = self.read(a, t)?;
                    let rows: Vec<u32> = (0..m)
                        .map(|i| la[i * k..(i + 1) * k].iter().fold(FREE, |x, y| join(x, *y)))
                        .collect();
                    let cols: Vec<u32> = match w {
                        Weight::Const(..) => vec![FREE; n],
                        Weight::View(v) | Weight::Masked(v, _) => {
                            let lw = self.read(v, t)?;
                            (0..n)
                                .map(|j| (0..k).fold(FREE, |x, i| join(x, lw[i * n + j])))
                                .collect()
                        }
                    };
                    let labels: Vec<u32> =
                        (0..m * n).map(|i| join(rows[i / n], cols[i % n])).collect();
                    self.write(out, t, &labels)?;
                }
                Stmt::Unary { out, x, .. } | Stmt::Clip { out, x, .. } | Stmt::Copy { out, x } => {
                    let l = self.read(x, t)?;
                    self.write(out, t, &l)?;
                }
                Stmt::Softmax { out, x, .. } => {
                    // Every element of a row depends on the whole row.
                    let mut l = self.read(x, t)?;
                    let n = out.dims.last().copied().unwrap_or(1).max(1);
                    for row in l.chunks_mut(n) {
                        let all = row.iter().fold(FREE, |x, y| join(x, *y));
                        row.fill(all);
                    }
                    self.write(out, t, &l)?;
                }
                Stmt::Binary { out, a, b, .. } => {
                    let (la, lb) = (self.read(a, t)?, self.read(b, t)?);
                    if la.len() != lb.len() {
                        return Err("a statement's views differ in size".into());
                    }
                    let l: Vec<u32> = la.iter().zip(&lb).map(|(x, y)| join(*x, *y)).collect();
                    self.write(out, t, &l)?;
                }
                Stmt::Loop {
                    trip,
                    reverse,
                    run,
                    body,
                } => match run {
                    LoopRun::LastStep => self.exec(body, trip.saturating_sub(1))?,
                    LoopRun::Fixed | LoopRun::Steps => {
                        for i in 0..*trip {
                            let step = if *reverse { trip - 1 - i } else { i };
                            self.exec(body, step)?;
                        }
                    }
                },
                Stmt::Start { body } => self.exec(body, t)?,
                Stmt::Barrier => {}
            }
        }
        Ok(())
    }
}

/// Checks that `p`'s batch elements are independent given the batch axis of each input and
/// output (`max` is the batch they are compiled for), and records the axes in
/// `p.batch_axes`; an error names the output that depends on other batch elements.
pub fn dynamic_batch(p: &mut Program, axes: BatchAxes) -> Result<(), String> {
    if axes.inputs.len() != p.inputs.len() || axes.outputs.len() != p.outputs.len() {
        return Err("a batch axis for every input and output is needed".into());
    }
    for (ids, list) in [(&p.inputs, &axes.inputs), (&p.outputs, &axes.outputs)] {
        for (id, a) in ids.iter().zip(list) {
            let b = &p.buffers[id.0];
            if let Some(a) = a
                && b.dims.get(*a) != Some(&axes.max)
            {
                return Err(format!(
                    "'{}' {} has no batch of {} in dim {a}",
                    b.name,
                    hlstm_ir::dims_text(&b.dims),
                    axes.max
                ));
            }
        }
    }
    if p.seq_lens.is_some() {
        return Err(
            "the sequence lengths are an input with one length per batch element: the batch \
             is fixed"
                .into(),
        );
    }
    let mut l = Labels {
        p,
        bufs: p.buffers.iter().map(|b| vec![FREE; b.len()]).collect(),
    };
    for (id, a) in p.inputs.iter().zip(&axes.inputs) {
        l.bufs[id.0] = axis_labels(&p.buffers[id.0].dims, *a);
    }
    l.exec(&p.body, 0)?;
    for (id, a) in p.outputs.iter().zip(&axes.outputs) {
        let b = &p.buffers[id.0];
        let want = axis_labels(&b.dims, *a);
        let bad = l.bufs[id.0]
            .iter()
            .zip(&want)
            .position(|(got, w)| *got != FREE && got != w);
        if let Some(i) = bad {
            return Err(match a {
                Some(_) => format!(
                    "output '{}' element {i} depends on other batch elements than its own: the \
                     model mixes the batch, which is therefore fixed",
                    b.name
                ),
                None => format!(
                    "output '{}' has no batch axis but depends on the batch: the batch is fixed",
                    b.name
                ),
            });
        }
    }
    p.batch_axes = Some(axes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlstm_ir::kernel::{BufKind, Storage};

    /// out[b, :] = x[b, :] · W, and a second output summing over the batch.
    fn program(mix: bool) -> Program {
        let mut p = Program::default();
        let x = p.add_buffer("x", BufKind::Input(0), &[3, 2]);
        let y = p.add_buffer("y", BufKind::Output(0), &[3, 4]);
        p.add_const("w", &[2, 4], vec![1.0; 8]);
        p.inputs.push(x);
        p.outputs.push(y);
        let a = if mix {
            // Reads x as [1, 6]: all batch elements in one row.
            View {
                storage: Storage::Buf(x),
                offset: 0,
                dims: vec![3, 2],
                strides: vec![0, 1],
                step_stride: 0,
            }
        } else {
            View::whole(x, &[3, 2])
        };
        p.body.push(Stmt::Copy {
            out: View::whole(y, &[3, 4]),
            x: View {
                storage: Storage::Const(hlstm_ir::kernel::ConstId(0)),
                offset: 0,
                dims: vec![3, 4],
                strides: vec![0, 0],
                step_stride: 0,
            },
        });
        p.body.push(Stmt::MatMul {
            out: View::whole(y, &[3, 4]),
            a,
            w: Weight::Const(
                hlstm_ir::kernel::ConstId(0),
                hlstm_ir::kernel::Strategy::Dense,
            ),
            rows_per_step: None,
        });
        p
    }

    fn axes(out: Option<usize>) -> BatchAxes {
        BatchAxes {
            max: 3,
            inputs: vec![Some(0)],
            outputs: vec![out],
        }
    }

    #[test]
    fn independent_rows_pass_and_mixing_is_refused() {
        let mut p = program(false);
        dynamic_batch(&mut p, axes(Some(0))).unwrap();
        assert_eq!(p.batch_axes.as_ref().unwrap().max, 3);
        // Every row reads x's row 0 (stride 0): rows 1 and 2 depend on batch element 0.
        let mut p = program(true);
        let e = dynamic_batch(&mut p, axes(Some(0))).unwrap_err();
        assert!(
            e.contains("output 'y'") && e.contains("other batch elements"),
            "{e}"
        );
        assert!(p.batch_axes.is_none());
        // An output said to have no batch axis that depends on the batch.
        let mut p = program(false);
        let e = dynamic_batch(&mut p, axes(None)).unwrap_err();
        assert!(e.contains("no batch axis"), "{e}");
        // A batch axis of the wrong size.
        let mut p = program(false);
        let e = dynamic_batch(
            &mut p,
            BatchAxes {
                max: 3,
                inputs: vec![Some(1)],
                outputs: vec![Some(0)],
            },
        )
        .unwrap_err();
        assert!(e.contains("no batch of 3 in dim 1"), "{e}");
    }

    #[test]
    fn labels_follow_the_batch_axis() {
        assert_eq!(axis_labels(&[2, 3], Some(1)), [1, 2, 3, 1, 2, 3]);
        assert_eq!(axis_labels(&[2, 3], Some(0)), [1, 1, 1, 2, 2, 2]);
        assert_eq!(axis_labels(&[2], None), [0, 0]);
        assert_eq!(join(FREE, 2), 2);
        assert_eq!(join(2, 2), 2);
        assert_eq!(join(1, 2), MIXED);
        assert_eq!(join(MIXED, FREE), MIXED);
    }
}
