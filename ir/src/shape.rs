//! Type and shape inference for one op, from its operands' types and, where an operand is a
//! constant (a shape, axes, slice bounds), its value. Unknown stays unknown; contradictions are
//! errors.

use crate::interp::{eval_op, kernels as k};
use crate::op::Op;
use crate::tensor::{DType, Dim, Tensor, TensorType};

/// What inference knows of one operand.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub ty: &'a TensorType,
    pub value: Option<&'a Tensor>,
}

fn bcast_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let n = a.len().max(b.len());
    let get = |s: &[Dim], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n].clone()
        } else {
            Dim::Known(1)
        }
    };
    (0..n)
        .map(|i| {
            let (x, y) = (get(a, i), get(b, i));
            Ok(match (&x, &y) {
                (Dim::Known(1), _) => y,
                (_, Dim::Known(1)) => x,
                (Dim::Known(p), Dim::Known(q)) if p != q => {
                    return Err(format!("dimensions {p} and {q} do not broadcast"));
                }
                (Dim::Known(_), _) => x,
                (_, Dim::Known(_)) => y,
                _ if x == y => x,
                _ => Dim::Unknown,
            })
        })
        .collect()
}

/// The product of `dims` as one dim: known when they all are, the one open dim when every
/// other is 1, else unknown.
fn dims_product(dims: &[Dim]) -> Dim {
    let open: Vec<&Dim> = dims.iter().filter(|d| d.known().is_none()).collect();
    let known: usize = dims.iter().filter_map(Dim::known).product();
    match open.as_slice() {
        [] => Dim::Known(known),
        [d] if known == 1 => (*d).clone(),
        _ => Dim::Unknown,
    }
}

fn ints(v: Option<&Tensor>) -> Option<Vec<i64>> {
    v.and_then(|t| t.to_i64_vec())
}

fn known(dtype: DType, s: Vec<usize>) -> TensorType {
    TensorType::known(dtype, &s)
}

/// Infers the result types of `op`. `args` holds one entry per operand slot.
pub fn infer(op: &Op, args: &[Option<Operand>]) -> Result<Vec<TensorType>, String> {
    let (lo, hi) = op.arity();
    if args.len() > hi {
        return Err(format!("takes at most {hi} operands, got {}", args.len()));
    }
    for i in 0..lo.max(args.len()) {
        if args.get(i).copied().flatten().is_none() && !op.optional_slot(i) {
            return Err(format!("operand {i} is missing"));
        }
    }
    // All operands constant and small: evaluate, which is exact for every op.
    if !matches!(op, Op::Recurrence(_) | Op::Input | Op::Const(_))
        && args.iter().flatten().all(|a| a.value.is_some())
    {
        let vals: Vec<Option<&Tensor>> = args.iter().map(|a| a.and_then(|a| a.value)).collect();
        let small = vals.iter().flatten().all(|t| t.len() <= 1 << 16);
        if small {
            return Ok(eval_op(op, &vals)?.iter().map(Tensor::ty).collect());
        }
    }
    let a0 = args.first().copied().flatten();
    let t0 = a0.map(|a| a.ty);
    let s0 = t0.and_then(|t| t.shape.clone());
    let dt0 = t0.map(|t| t.dtype).unwrap_or(DType::F32);
    let same = |shape: Option<Vec<Dim>>| vec![TensorType { dtype: dt0, shape }];
    let arg = |i: usize| args.get(i).copied().flatten();
    Ok(match op {
        Op::Input | Op::Const(_) => return Err("inputs and constants carry their own types".into()),
        Op::Identity
        | Op::Unary(_)
        | Op::Clip
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reverse { .. } => same(s0),
        Op::Cast { to } => vec![TensorType {
            dtype: *to,
            shape: s0,
        }],
        Op::Binary(_) => {
            let t1 = arg(1).map(|a| a.ty).ok_or("operand 1 is missing")?;
            if t1.dtype != dt0 {
                return Err(format!("operand types differ: {} and {}", dt0, t1.dtype));
            }
            match (&s0, &t1.shape) {
                (Some(a), Some(b)) => same(Some(bcast_dims(a, b)?)),
                _ => same(None),
            }
        }
        Op::Compare(_) | Op::Logic(_) => {
            let t1 = arg(1).map(|a| a.ty).ok_or("operand 1 is missing")?;
            if t1.dtype != dt0 {
                return Err(format!("operand types differ: {} and {}", dt0, t1.dtype));
            }
            if matches!(op, Op::Logic(_)) && dt0 != DType::Bool {
                return Err(format!("{} takes bool operands, got {dt0}", op.kind()));
            }
            let shape = match (&s0, &t1.shape) {
                (Some(a), Some(b)) => Some(bcast_dims(a, b)?),
                _ => None,
            };
            vec![TensorType {
                dtype: DType::Bool,
                shape,
            }]
        }
        Op::Not => {
            if dt0 != DType::Bool {
                return Err(format!("not takes a bool operand, got {dt0}"));
            }
            same(s0)
        }
        Op::ReduceSum {
            keepdims,
            noop_with_empty_axes,
        } => {
            if dt0 == DType::Bool {
                return Err("reduce_sum takes a numeric operand, got bool".into());
            }
            let axes = match arg(1) {
                None => Some(vec![]),
                Some(a) => ints(a.value),
            };
            match (&s0, axes) {
                (Some(s), Some(axes)) => {
                    let r = s.len();
                    let mut reduced = vec![axes.is_empty() && !noop_with_empty_axes; r];
                    for &a in &axes {
                        reduced[k::norm_axis(a, r)?] = true;
                    }
                    let out = (0..r)
                        .filter_map(|d| match (reduced[d], keepdims) {
                            (false, _) => Some(s[d].clone()),
                            (true, true) => Some(Dim::Known(1)),
                            (true, false) => None,
                        })
                        .collect();
                    same(Some(out))
                }
                // Run-time axes: with keepdims the rank stays.
                (Some(s), None) if *keepdims => same(Some(vec![Dim::Unknown; s.len()])),
                _ => same(None),
            }
        }
        Op::Where => {
            let (c, x, y) = (
                arg(0).ok_or("cond")?.ty,
                arg(1).ok_or("x")?.ty,
                arg(2).ok_or("y")?.ty,
            );
            if c.dtype != DType::Bool {
                return Err(format!("condition must be bool, got {}", c.dtype));
            }
            let shape = match (&c.shape, &x.shape, &y.shape) {
                (Some(a), Some(b), Some(d)) => Some(bcast_dims(&bcast_dims(a, b)?, d)?),
                _ => None,
            };
            vec![TensorType {
                dtype: x.dtype,
                shape,
            }]
        }
        Op::MatMul => {
            let t1 = arg(1).ok_or("B")?.ty;
            match (&s0, &t1.shape) {
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
                    let (ka, kb) = (
                        &a[a.len() - 1],
                        &b[if b.len() == 1 { 0 } else { b.len() - 2 }],
                    );
                    if let (Dim::Known(p), Dim::Known(q)) = (ka, kb)
                        && p != q
                    {
                        return Err(format!("inner dimensions differ: {p} vs {q}"));
                    }
                    let ba = if a.len() > 2 {
                        &a[..a.len() - 2]
                    } else {
                        &[][..]
                    };
                    let bb = if b.len() > 2 {
                        &b[..b.len() - 2]
                    } else {
                        &[][..]
                    };
                    let mut out = bcast_dims(ba, bb)?;
                    if a.len() >= 2 {
                        out.push(a[a.len() - 2].clone());
                    }
                    if b.len() >= 2 {
                        out.push(b[b.len() - 1].clone());
                    }
                    same(Some(out))
                }
                (Some(_), Some(_)) => return Err("matmul operands must have rank >= 1".into()),
                _ => same(None),
            }
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let t1 = arg(1).ok_or("B")?.ty;
            match (&s0, &t1.shape) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let (m, ka) = if *trans_a {
                        (&a[1], &a[0])
                    } else {
                        (&a[0], &a[1])
                    };
                    let (kb, n) = if *trans_b {
                        (&b[1], &b[0])
                    } else {
                        (&b[0], &b[1])
                    };
                    if let (Dim::Known(p), Dim::Known(q)) = (ka, kb)
                        && p != q
                    {
                        return Err(format!("inner dimensions differ: {p} vs {q}"));
                    }
                    same(Some(vec![m.clone(), n.clone()]))
                }
                (Some(a), Some(b)) => {
                    return Err(format!(
                        "gemm needs 2-D operands, got rank {} and {}",
                        a.len(),
                        b.len()
                    ));
                }
                _ => same(None),
            }
        }
        Op::Concat { axis } => {
            let tys: Vec<&TensorType> = args.iter().flatten().map(|a| a.ty).collect();
            if tys.iter().any(|t| t.dtype != dt0) {
                return Err("operand types differ".into());
            }
            let shapes: Option<Vec<&Vec<Dim>>> = tys.iter().map(|t| t.shape.as_ref()).collect();
            match shapes {
                Some(sh) => {
                    let r = sh[0].len();
                    if sh.iter().any(|s| s.len() != r) {
                        return Err("operands differ in rank".into());
                    }
                    let ax = k::dim_axis(*axis, r)?;
                    let mut out = sh[0].clone();
                    out[ax] = sh
                        .iter()
                        .try_fold(Dim::Known(0), |acc, s| match (acc, &s[ax]) {
                            (Dim::Known(p), Dim::Known(q)) => Some(Dim::Known(p + q)),
                            _ => None,
                        })
                        .unwrap_or(Dim::Unknown);
                    same(Some(out))
                }
                None => same(None),
            }
        }
        Op::Split { axis, num_outputs } => {
            let Some(s) = s0 else {
                return Ok(vec![TensorType::unranked(dt0); *num_outputs]);
            };
            let ax = k::dim_axis(*axis, s.len())?;
            let sizes = match (&s[ax], arg(1)) {
                (Dim::Known(n), None) => Some(k::split_sizes(*n, None, *num_outputs)?),
                (Dim::Known(n), Some(a)) => match ints(a.value) {
                    Some(v) => Some(k::split_sizes(*n, Some(&v), *num_outputs)?),
                    None => None,
                },
                // Constant sizes fix each part's dim even where the input's is known only at
                // run time (the kernel checks that they add up).
                (_, Some(a)) => match ints(a.value) {
                    Some(v) if v.len() == *num_outputs && v.iter().all(|&x| x >= 0) => {
                        Some(v.iter().map(|&x| x as usize).collect())
                    }
                    _ => None,
                },
                _ => None,
            };
            (0..*num_outputs)
                .map(|i| {
                    let mut d = s.clone();
                    d[ax] = sizes.as_ref().map_or(Dim::Unknown, |z| Dim::Known(z[i]));
                    TensorType {
                        dtype: dt0,
                        shape: Some(d),
                    }
                })
                .collect()
        }
        Op::Gather { axis } => {
            let it = arg(1).ok_or("indices")?.ty;
            match (&s0, &it.shape) {
                (Some(s), Some(is)) => {
                    let ax = k::dim_axis(*axis, s.len())?;
                    let mut out = s[..ax].to_vec();
                    out.extend(is.iter().cloned());
                    out.extend(s[ax + 1..].iter().cloned());
                    same(Some(out))
                }
                _ => same(None),
            }
        }
        Op::Transpose { perm } => match s0 {
            Some(s) => {
                let p: Vec<usize> = perm.clone().unwrap_or_else(|| (0..s.len()).rev().collect());
                if p.len() != s.len() || p.iter().any(|&i| i >= s.len()) {
                    return Err(format!(
                        "perm {} does not fit rank {}",
                        crate::dims_text(&p),
                        s.len()
                    ));
                }
                same(Some(p.iter().map(|&i| s[i].clone()).collect()))
            }
            None => same(None),
        },
        Op::Flatten { axis } => match s0 {
            Some(s) => match s.iter().map(Dim::known).collect::<Option<Vec<_>>>() {
                Some(c) => vec![known(dt0, k::flatten_shape(&c, *axis)?)],
                None => {
                    // Each side keeps what it can: [B,2,3] at axis 2 is [?,3], [B,16] at
                    // axis 1 is [B,16].
                    let r = s.len() as i64;
                    let a = if *axis < 0 { axis + r } else { *axis };
                    if !(0..=r).contains(&a) {
                        return Err(format!("flatten axis {axis} out of range for rank {r}"));
                    }
                    let a = a as usize;
                    same(Some(vec![dims_product(&s[..a]), dims_product(&s[a..])]))
                }
            },
            None => same(Some(vec![Dim::Unknown, Dim::Unknown])),
        },
        Op::Shape { start, end } => {
            let n = s0.as_ref().map(|s| {
                let (lo, hi) = k::shape_range(s.len(), *start, *end);
                Dim::Known(hi - lo)
            });
            vec![TensorType::new(DType::I64, vec![n.unwrap_or(Dim::Unknown)])]
        }
        Op::Unsqueeze
        | Op::Squeeze
        | Op::Reshape { .. }
        | Op::Expand
        | Op::Slice
        | Op::ConstantOfShape { .. } => infer_shaped(op, args, s0.as_deref(), dt0)?,
        Op::Recurrence(r) => {
            let body = &r.body;
            let mut out: Vec<TensorType> = body.outputs[..r.num_carried.min(body.outputs.len())]
                .iter()
                .map(|(_, v)| body.value_type(*v).clone())
                .collect();
            let t_dim = arg(r.num_carried)
                .and_then(|a| a.ty.shape.as_ref().and_then(|s| s.first().cloned()))
                .unwrap_or(Dim::Unknown);
            for (_, v) in &body.outputs[r.num_carried.min(body.outputs.len())..] {
                let ty = body.value_type(*v);
                let shape = ty.shape.as_ref().map(|s| {
                    let mut d = vec![t_dim.clone()];
                    d.extend(s.iter().cloned());
                    d
                });
                out.push(TensorType {
                    dtype: ty.dtype,
                    shape,
                });
            }
            out
        }
    })
}

/// Ops whose result shape comes from a constant operand.
fn infer_shaped(
    op: &Op,
    args: &[Option<Operand>],
    s0: Option<&[Dim]>,
    dt0: DType,
) -> Result<Vec<TensorType>, String> {
    let v1 = args.get(1).copied().flatten().and_then(|a| ints(a.value));
    let concrete = s0.and_then(|s| s.iter().map(Dim::known).collect::<Option<Vec<_>>>());
    let unranked = vec![TensorType::unranked(dt0)];
    Ok(match op {
        Op::Unsqueeze => match (s0, v1) {
            (Some(s), Some(axes)) => {
                let r = s.len() + axes.len();
                let ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| k::norm_axis(a, r))
                    .collect::<Result<_, _>>()?;
                let mut it = s.iter();
                let mut out = Vec::new();
                for i in 0..r {
                    out.push(if ax.contains(&i) {
                        Dim::Known(1)
                    } else {
                        it.next().cloned().ok_or("axes out of range")?
                    });
                }
                vec![TensorType::new(dt0, out)]
            }
            _ => unranked,
        },
        Op::Squeeze => match (s0, args.get(1).copied().flatten()) {
            (Some(s), Some(_)) if v1.is_some() => {
                let axes = v1.unwrap_or_default();
                let ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| k::norm_axis(a, s.len()))
                    .collect::<Result<_, _>>()?;
                for &a in &ax {
                    if let Dim::Known(n) = s[a]
                        && n != 1
                    {
                        return Err(format!("cannot squeeze axis {a} of size {n}"));
                    }
                }
                vec![TensorType::new(
                    dt0,
                    s.iter()
                        .enumerate()
                        .filter(|(i, _)| !ax.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect(),
                )]
            }
            (Some(s), None) if s.iter().all(|d| d.known().is_some()) => {
                vec![TensorType::new(
                    dt0,
                    s.iter().filter(|d| **d != Dim::Known(1)).cloned().collect(),
                )]
            }
            _ => unranked,
        },
        Op::Reshape { allowzero } => match v1 {
            Some(t) => match &concrete {
                Some(c) => vec![known(dt0, k::reshape_shape(c, &t, *allowzero)?)],
                None => {
                    // Copy dims for 0 entries, keep known positive entries.
                    let dims = t
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| match d {
                            0 if !allowzero => {
                                s0.and_then(|s| s.get(i).cloned()).unwrap_or(Dim::Unknown)
                            }
                            d if d > 0 => Dim::Known(d as usize),
                            _ => Dim::Unknown,
                        })
                        .collect();
                    vec![TensorType::new(dt0, dims)]
                }
            },
            None => unranked,
        },
        Op::Expand => match (s0, v1) {
            (Some(s), Some(t)) => {
                let td: Vec<Dim> = t.iter().map(|&d| Dim::Known(d.max(0) as usize)).collect();
                vec![TensorType::new(dt0, bcast_dims(s, &td)?)]
            }
            _ => unranked,
        },
        Op::ConstantOfShape { value } => {
            match args.first().copied().flatten().and_then(|a| ints(a.value)) {
                Some(t) => {
                    let s: Vec<usize> = t.iter().map(|&d| d.max(0) as usize).collect();
                    k::check_size(&s)?;
                    vec![known(value.dtype(), s)]
                }
                None => {
                    let rank = args
                        .first()
                        .copied()
                        .flatten()
                        .and_then(|a| a.ty.concrete())
                        .and_then(|c| c.first().copied());
                    match rank {
                        Some(r) => vec![TensorType::new(value.dtype(), vec![Dim::Unknown; r])],
                        None => vec![TensorType::unranked(value.dtype())],
                    }
                }
            }
        }
        Op::Slice => {
            // Every operand given is a constant (absent optional ones, such as `steps` that
            // torch's dynamo exporter, tf2onnx and paddle2onnx leave out, take their default).
            let consts: Option<Vec<Tensor>> = args[1..]
                .iter()
                .flatten()
                .map(|a| a.value.cloned())
                .collect::<Option<Vec<_>>>();
            match (s0, consts) {
                (Some(s), Some(_)) => {
                    // Slice a zero tensor of the same shape, with unknown dims as 1 and then
                    // marked unknown unless untouched.
                    let probe: Vec<usize> = s.iter().map(|d| d.known().unwrap_or(1)).collect();
                    k::check_size(&probe)?;
                    let z = Tensor::zeros(DType::Bool, &probe);
                    let get = |i: usize| args.get(i).copied().flatten().and_then(|a| a.value);
                    let r = k::slice(
                        &z,
                        get(1).ok_or("starts")?,
                        get(2).ok_or("ends")?,
                        get(3),
                        get(4),
                    )?;
                    let sliced_axes: Vec<usize> = match get(3).and_then(|t| t.to_i64_vec()) {
                        Some(a) => a
                            .iter()
                            .map(|&x| k::norm_axis(x, s.len()))
                            .collect::<Result<_, _>>()?,
                        None => (0..get(1).map_or(0, |t| t.len())).collect(),
                    };
                    // An axis sliced from 0 to an end past any length (tf2onnx writes
                    // 2^31-1), step 1, keeps its whole dim, symbolic ones included.
                    let at = |k: usize, j: usize| {
                        get(k)
                            .and_then(|t| t.to_i64_vec())
                            .and_then(|v| v.get(j).copied())
                    };
                    let whole = |i: usize| {
                        let Some(j) = sliced_axes.iter().position(|&a| a == i) else {
                            return false;
                        };
                        at(1, j) == Some(0)
                            && at(2, j).is_some_and(|e| e >= i64::from(i32::MAX))
                            && at(4, j).is_none_or(|st| st == 1)
                    };
                    let dims = r
                        .shape()
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            if s[i].known().is_some() {
                                Dim::Known(n)
                            } else if sliced_axes.contains(&i) && !whole(i) {
                                Dim::Unknown
                            } else {
                                s[i].clone()
                            }
                        })
                        .collect();
                    vec![TensorType::new(dt0, dims)]
                }
                (Some(s), None) => vec![TensorType::new(dt0, vec![Dim::Unknown; s.len()])],
                _ => unranked,
            }
        }
        _ => unreachable!("infer_shaped is called only for shape-operand ops"),
    })
}

/// Infers the result types of `op` applied to values of `g` (constants are read in place).
pub fn infer_in(
    g: &crate::Graph,
    op: &Op,
    operands: &[Option<crate::Value>],
) -> Result<Vec<TensorType>, String> {
    let args: Vec<Option<Operand>> = operands
        .iter()
        .map(|o| {
            o.map(|v| Operand {
                ty: g.value_type(v),
                value: g.constant(v).map(|c| &*c.value),
            })
        })
        .collect();
    infer(op, &args)
}

impl crate::Graph {
    /// Adds a single-result node whose result type is inferred; the node and its result are
    /// both named `name`.
    pub fn add_inferred(
        &mut self,
        name: &str,
        op: Op,
        operands: &[Option<crate::Value>],
    ) -> Result<crate::Value, String> {
        let ty = infer_in(self, &op, operands)?.swap_remove(0);
        let node = self.add_node(
            name,
            op,
            operands,
            vec![crate::ValueInfo {
                name: name.to_string(),
                ty,
            }],
        );
        Ok(crate::Value { node, slot: 0 })
    }
}
