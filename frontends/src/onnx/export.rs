//! ONNX export: writes a graph of the IR as an ONNX model (opset 17), the inverse of import for
//! the ops models are built from. Constants become initializers (in a recurrence body: the
//! body's own initializers), a `recurrence` becomes a `Scan` whose body reads its invariants from
//! the outer graph by name (outer-scope capture, as the importer and ONNX Runtime both accept).
//!
//! Value names are kept where they are unique, so the initializer names of a trained model are
//! its parameter names; body values are prefixed with the recurrence's node name, because ONNX
//! forbids a subgraph from reusing a name of its enclosing graphs.

use hlstm_ir::{Act, BinOp, DType, Dim, Graph, Op, Tensor, TensorType, Value};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};
use std::collections::{HashMap, HashSet};

pub const EXPORT_OPSET: i64 = 17;

/// The model, with `producer` as its producer name.
pub fn export(g: &Graph, producer: &str) -> Result<ModelProto, String> {
    let mut names = Names::default();
    for (name, v) in &g.outputs {
        names.used.insert(name.clone());
        names.outputs.entry(name.clone()).or_insert(*v);
    }
    let graph = write_graph(g, "main", "", &HashMap::new(), &mut names, 0)?;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = producer.into();
    let mut os = OperatorSetIdProto::new();
    os.version = EXPORT_OPSET;
    m.opset_import.push(os);
    m.graph = Some(graph).into();
    Ok(m)
}

/// Value and node names used anywhere in the model so far (ONNX names are global across
/// subgraphs; values and nodes are separate namespaces).
#[derive(Default)]
struct Names {
    used: HashSet<String>,
    nodes: HashSet<String>,
    /// Top-level output names, reserved for the value each names (any other value that
    /// carries the name is renamed, so the output keeps it).
    outputs: HashMap<String, Value>,
}

fn fresh_in(used: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut i = 1;
    while name.is_empty() || used.contains(&name) {
        name = format!("{base}.{i}");
        i += 1;
    }
    used.insert(name.clone());
    name
}

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        fresh_in(&mut self.used, base)
    }
    fn node(&mut self, base: &str) -> String {
        fresh_in(&mut self.nodes, base)
    }
    /// The name of top-level value `v` (`top`), or of a body value.
    fn value(&mut self, base: &str, v: Value, top: bool) -> String {
        if top && self.outputs.get(base) == Some(&v) && self.used.insert(base.to_string()) {
            return base.to_string();
        }
        self.fresh(base)
    }
}

/// ONNX's TensorProto.DataType code.
fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => 1,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
    }
}

/// The ONNX declaration of a value of IR type `ty`.
pub(crate) fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    value_info_proto(name, elem_type(ty.dtype), ty.shape.as_deref())
}

/// The one builder of ONNX `ValueInfoProto`s: a tensor named `name` of ONNX element type code
/// `elem` (1 float, 7 int64, ...; any code, so that tests can write types hlstmc refuses) with
/// these dims (`Sym` as a named dim, `Unknown` as a dim without value; `None` leaves the shape
/// out).
pub fn value_info_proto(name: &str, elem: i32, dims: Option<&[Dim]>) -> ValueInfoProto {
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = elem;
    if let Some(dims) = dims {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = match d {
                Dim::Known(n) => Some(tensor_shape_proto::dimension::Value::DimValue(*n as i64)),
                Dim::Sym(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                Dim::Unknown => None,
            };
            shape.dim.push(dim);
        }
        tt.shape = Some(shape).into();
    }
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(tp).into();
    vi
}

/// A tensor as a TensorProto with raw little-endian data.
pub fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto::new();
    p.name = name.into();
    p.dims = t.shape().iter().map(|&d| d as i64).collect();
    p.data_type = elem_type(t.dtype());
    p.raw_data = match t {
        Tensor::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::I64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::I32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::Bool(a) => a.iter().map(|&v| v as u8).collect(),
    };
    p
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = protobuf::EnumOrUnknown::new(ty);
    a
}
fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = attr(name, AttributeType::INT);
    a.i = v;
    a
}
fn float(name: &str, v: f32) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOAT);
    a.f = v;
    a
}
fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = attr(name, AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

/// The ONNX op type and attributes of a non-recurrence op.
fn op_type(op: &Op) -> Result<(&'static str, Vec<AttributeProto>), String> {
    let alpha = |a| vec![float("alpha", a)];
    Ok(match op {
        Op::Identity => ("Identity", vec![]),
        Op::Unary(a) => match *a {
            Act::Sigmoid => ("Sigmoid", vec![]),
            Act::Tanh => ("Tanh", vec![]),
            Act::Relu => ("Relu", vec![]),
            Act::Exp => ("Exp", vec![]),
            Act::Neg => ("Neg", vec![]),
            Act::Softsign => ("Softsign", vec![]),
            Act::Softplus => ("Softplus", vec![]),
            Act::LeakyRelu { alpha: x } => ("LeakyRelu", alpha(x)),
            Act::Elu { alpha: x } => ("Elu", alpha(x)),
            Act::ThresholdedRelu { alpha: x } => ("ThresholdedRelu", alpha(x)),
            Act::HardSigmoid { alpha: x, beta } => {
                ("HardSigmoid", vec![float("alpha", x), float("beta", beta)])
            }
            Act::Affine { .. }
            | Act::ScaledTanh { .. }
            | Act::NotZero
            | Act::IsZero
            | Act::IsPositive
            | Act::IsNonNegative => {
                return Err(format!("the activation {} has no ONNX op", a.name()));
            }
        },
        Op::Binary(b) => match b {
            BinOp::Add => ("Add", vec![]),
            BinOp::Sub => ("Sub", vec![]),
            BinOp::Mul => ("Mul", vec![]),
            BinOp::Div => ("Div", vec![]),
        },
        Op::Clip => ("Clip", vec![]),
        Op::MatMul => ("MatMul", vec![]),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => (
            "Gemm",
            vec![
                float("alpha", *alpha),
                float("beta", *beta),
                int("transA", *trans_a as i64),
                int("transB", *trans_b as i64),
            ],
        ),
        Op::Softmax { axis } => ("Softmax", vec![int("axis", *axis)]),
        Op::LogSoftmax { axis } => ("LogSoftmax", vec![int("axis", *axis)]),
        Op::Where => ("Where", vec![]),
        Op::Compare(c) => (c.onnx(), vec![]),
        Op::Logic(l) => (l.onnx(), vec![]),
        Op::Not => ("Not", vec![]),
        // Opset 17: axes are the second operand.
        Op::ReduceSum {
            keepdims,
            noop_with_empty_axes,
        } => (
            "ReduceSum",
            vec![
                int("keepdims", *keepdims as i64),
                int("noop_with_empty_axes", *noop_with_empty_axes as i64),
            ],
        ),
        Op::Concat { axis } => ("Concat", vec![int("axis", *axis)]),
        // Opset 17: without a `split` operand the outputs are equal parts.
        Op::Split { axis, .. } => ("Split", vec![int("axis", *axis)]),
        Op::Slice => ("Slice", vec![]),
        Op::Gather { axis } => ("Gather", vec![int("axis", *axis)]),
        Op::Unsqueeze => ("Unsqueeze", vec![]),
        Op::Squeeze => ("Squeeze", vec![]),
        Op::Flatten { axis } => ("Flatten", vec![int("axis", *axis)]),
        Op::Reshape { allowzero } => ("Reshape", vec![int("allowzero", *allowzero as i64)]),
        Op::Transpose { perm } => (
            "Transpose",
            perm.as_ref()
                .map(|p| {
                    vec![ints(
                        "perm",
                        &p.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                    )]
                })
                .unwrap_or_default(),
        ),
        Op::Expand => ("Expand", vec![]),
        Op::Shape { start, end } => {
            let mut a = vec![int("start", *start)];
            a.extend(end.map(|e| int("end", e)));
            ("Shape", a)
        }
        Op::ConstantOfShape { value } => {
            let mut a = attr("value", AttributeType::TENSOR);
            a.t = Some(tensor_proto("value", value)).into();
            ("ConstantOfShape", vec![a])
        }
        Op::Cast { to } => ("Cast", vec![int("to", elem_type(*to) as i64)]),
        Op::Reverse { .. } => return Err("reverse has no ONNX op".into()),
        Op::Input | Op::Const(_) | Op::Recurrence(_) => unreachable!("handled by the caller"),
    })
}

/// Writes `g` as a GraphProto. `prefix` is prepended to value names (bodies); `captured` maps a
/// body input node to the outer name it reads (a recurrence's invariants); `formal` is the
/// number of leading body inputs that are the Scan's formal inputs (all of them at top level).
fn write_graph(
    g: &Graph,
    name: &str,
    prefix: &str,
    captured: &HashMap<usize, String>,
    names: &mut Names,
    depth: usize,
) -> Result<GraphProto, String> {
    let mut gp = GraphProto::new();
    gp.name = name.into();
    let mut vname: HashMap<Value, String> = HashMap::new();
    for (k, &n) in g.inputs.iter().enumerate() {
        let info = &g.nodes[n].results[0];
        let v = Value { node: n, slot: 0 };
        if let Some(outer) = captured.get(&k) {
            vname.insert(v, outer.clone());
            continue;
        }
        let nm = names.value(&format!("{prefix}{}", info.name), v, depth == 0);
        gp.input.push(value_info(&nm, &info.ty));
        vname.insert(v, nm);
    }
    let order = g
        .topo_order()
        .map_err(|n| format!("the graph has a cycle through node '{n}'"))?;
    for n in order {
        let node = &g.nodes[n];
        if matches!(node.op, Op::Input) {
            continue;
        }
        let operands: Vec<String> = g
            .operands(n)
            .iter()
            .map(|o| o.and_then(|v| vname.get(&v).cloned()).unwrap_or_default())
            .collect();
        let outs: Vec<String> = node
            .results
            .iter()
            .enumerate()
            .map(|(slot, r)| {
                names.value(
                    &format!("{prefix}{}", r.name),
                    Value { node: n, slot },
                    depth == 0,
                )
            })
            .collect();
        for (slot, nm) in outs.iter().enumerate() {
            vname.insert(Value { node: n, slot }, nm.clone());
        }
        let mut np = NodeProto::new();
        np.name = names.node(&format!("{prefix}{}", node.name));
        np.input = operands;
        // Trailing empty optional operands are dropped, as ONNX writes them.
        while np.input.last().is_some_and(|s| s.is_empty()) {
            np.input.pop();
        }
        np.output = outs.clone();
        match &node.op {
            Op::Input => unreachable!("skipped above"),
            Op::Const(c) => {
                gp.initializer.push(tensor_proto(&outs[0], &c.value));
                continue;
            }
            Op::Recurrence(r) => {
                if r.has_seq_lens {
                    return Err(format!(
                        "node '{}': a recurrence with sequence lengths has no Scan form",
                        node.name
                    ));
                }
                let k = r.num_carried + r.num_scanned;
                let cap: HashMap<usize, String> = (k..k + r.num_invariant)
                    .map(|i| (i, np.input[i].clone()))
                    .collect();
                np.input.truncate(k);
                let body = write_graph(
                    &r.body,
                    &format!("{}_body", node.name),
                    &format!("{}/", node.name),
                    &cap,
                    names,
                    depth + 1,
                )?;
                np.op_type = "Scan".into();
                let dir = |n: usize| vec![r.reverse as i64; n];
                let mut a = attr("body", AttributeType::GRAPH);
                a.g = Some(body).into();
                np.attribute = vec![a, int("num_scan_inputs", r.num_scanned as i64)];
                if r.reverse {
                    np.attribute
                        .push(ints("scan_input_directions", &dir(r.num_scanned)));
                    np.attribute
                        .push(ints("scan_output_directions", &dir(r.num_step_outputs())));
                }
            }
            op => {
                let (t, attrs) = op_type(op).map_err(|e| format!("node '{}': {e}", node.name))?;
                np.op_type = t.into();
                np.attribute = attrs;
            }
        }
        gp.node.push(np);
    }
    let mut written = HashSet::new();
    for (oname, v) in &g.outputs {
        let inner = vname
            .get(v)
            .cloned()
            .ok_or_else(|| format!("output '{oname}' is not computed"))?;
        if depth == 0 && !written.insert(oname.clone()) {
            return Err(format!("two outputs are named '{oname}'"));
        }
        // A top-level output keeps its name (reserved from the start); a body's outputs are
        // positional, and each needs a name of its own (h' is both the carried state and the
        // per-step output).
        let out = if inner == *oname && depth == 0 {
            inner
        } else {
            let want = if depth == 0 {
                oname.clone()
            } else {
                names.fresh(&format!("{prefix}{oname}.out"))
            };
            let mut id = NodeProto::new();
            id.op_type = "Identity".into();
            id.name = names.node(&format!("{want}.identity"));
            id.input = vec![inner];
            id.output = vec![want.clone()];
            gp.node.push(id);
            want
        };
        gp.output.push(value_info(&out, g.value_type(*v)));
    }
    Ok(gp)
}
