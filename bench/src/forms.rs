//! The same H-LSTM weights written as three ONNX models (opset 17), each with graph input `X`
//! `[T, B, X]` and outputs `Y` `[T, B, H]` (every step's h) and `Y_h` `[B, H]` (the last h):
//!
//! - [`Form::Scan`]: an ONNX `Scan` whose body computes the cell gate by gate with MatMul, Add,
//!   Relu, Sigmoid, Tanh and Mul; the body reads its weights either as outer-graph initializers
//!   or as its own initializers.
//! - [`Form::Unrolled`]: T copies of the cell in the main graph (MatMul/Add), x_t taken with
//!   Gather or with Split + Squeeze, `h_0`/`c_0` zero initializers, `Y` by Unsqueeze + Concat.
//! - [`Form::TorchGemm`]: what `torch.onnx.export` writes for four `nn.Sequential` gate networks
//!   in a Python time loop: per-gate Gemm chains with transB=1 (weights stored `[out, in]` as
//!   `gates.K.N.weight`), Constant nodes for indices and zero states, Unsqueeze + Concat for `Y`.
//!
//! [`lstm_model`] writes a plain LSTM (one ONNX `LSTM` op) for the benchmarks' LSTM models.

use crate::modelgen::{GATES, Hlstm, Lstm};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType,
};
use protobuf::Message;

pub const OPSET: i64 = 17;

/// Where a Scan body finds its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanWeights {
    /// Initializers of the main graph, read from the body by name (outer scope).
    Outer,
    /// Initializers of the body graph itself.
    Body,
}

/// How an unrolled graph takes x_t out of `X`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XSlicing {
    /// `Gather(X, t)` on axis 0 with a scalar index.
    Gather,
    /// One `Split` of `X` on axis 0 into T pieces, each `Squeeze`d on axis 0.
    SplitSqueeze,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Scan(ScanWeights),
    Unrolled(XSlicing),
    TorchGemm,
}

impl Form {
    /// A short name for file names and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Form::Scan(ScanWeights::Outer) => "scan_outer",
            Form::Scan(ScanWeights::Body) => "scan_body",
            Form::Unrolled(XSlicing::Gather) => "unrolled_gather",
            Form::Unrolled(XSlicing::SplitSqueeze) => "unrolled_split",
            Form::TorchGemm => "torch_gemm",
        }
    }
}

/// Writes the model in the given form, for `steps` time steps and `batch` rows.
pub fn model(m: &Hlstm, steps: usize, batch: usize, form: Form) -> ModelProto {
    match form {
        Form::Scan(w) => scan_model(m, steps, batch, w),
        Form::Unrolled(s) => unrolled_model(m, steps, batch, s),
        Form::TorchGemm => gemm_model(m, steps, batch),
    }
}

/// The serialized model.
pub fn model_bytes(m: &Hlstm, steps: usize, batch: usize, form: Form) -> Vec<u8> {
    model(m, steps, batch, form)
        .write_to_bytes()
        .expect("an ONNX model serializes")
}

// ---------------------------------------------------------------------------------------------
// Proto helpers.

pub fn value_info(name: &str, elem_type: i32, dims: &[usize]) -> ValueInfoProto {
    let dims: Vec<hlstm_ir::Dim> = dims.iter().map(|&d| hlstm_ir::Dim::Known(d)).collect();
    hlstm_frontends::onnx::export::value_info_proto(name, elem_type, Some(&dims))
}

fn f32_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    value_info(name, 1, dims)
}

pub fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}: size");
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = 1;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn i64_tensor(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}: size");
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = 7;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name.to_string();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = protobuf::EnumOrUnknown::new(ty);
    a
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = attr(name, AttributeType::INT);
    a.i = v;
    a
}

pub fn float_attr(name: &str, v: f32) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOAT);
    a.f = v;
    a
}

pub fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    let mut a = attr(name, AttributeType::GRAPH);
    a.g = Some(g).into();
    a
}

pub fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = attr(name, AttributeType::TENSOR);
    a.t = Some(t).into();
    a
}

fn with(mut n: NodeProto, attrs: Vec<AttributeProto>) -> NodeProto {
    n.attribute = attrs;
    n
}

fn graph(
    name: &str,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
) -> GraphProto {
    let mut g = GraphProto::new();
    g.name = name.into();
    g.input = inputs;
    g.output = outputs;
    g.initializer = inits;
    g.node = nodes;
    g
}

fn wrap(g: GraphProto) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "hlstm-bench".into();
    let mut os = OperatorSetIdProto::new();
    os.version = OPSET;
    m.opset_import.push(os);
    m.graph = Some(g).into();
    m
}

fn io(m: &Hlstm, steps: usize, batch: usize) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    (
        vec![f32_info("X", &[steps, batch, m.inputs])],
        vec![
            f32_info("Y", &[steps, batch, m.hidden]),
            f32_info("Y_h", &[batch, m.hidden]),
        ],
    )
}

/// The MatMul-form weight names: `{gate}_W{l}` `[in, out]`, `{gate}_b{l}` `[out]`.
fn matmul_weights(m: &Hlstm) -> Vec<TensorProto> {
    let mut v = Vec::new();
    for (g, layers) in m.gates.iter().enumerate() {
        for (l, layer) in layers.iter().enumerate() {
            let gn = GATES[g];
            v.push(f32_tensor(
                &format!("{gn}_W{l}"),
                &[layer.n_in, layer.n_out],
                &layer.w,
            ));
            v.push(f32_tensor(&format!("{gn}_b{l}"), &[layer.n_out], &layer.b));
        }
    }
    v
}

/// One cell in MatMul/Add form. `p` prefixes every value name; z is `z`, the states `h_prev`
/// and `c_prev`; writes `h_out` and `c_out`.
#[allow(clippy::too_many_arguments)]
fn matmul_cell(
    m: &Hlstm,
    p: &str,
    x: &str,
    h_prev: &str,
    c_prev: &str,
    h_out: &str,
    c_out: &str,
    nodes: &mut Vec<NodeProto>,
) {
    let z = format!("{p}z");
    nodes.push(with(
        node("Concat", &z, &[x, h_prev], &[&z]),
        vec![int_attr("axis", 1)],
    ));
    let mut gate_out = Vec::new();
    for (g, layers) in m.gates.iter().enumerate() {
        let gn = GATES[g];
        let mut a = z.clone();
        for l in 0..layers.len() {
            let mm = format!("{p}{gn}_m{l}");
            let ad = format!("{p}{gn}_a{l}");
            nodes.push(node("MatMul", &mm, &[&a, &format!("{gn}_W{l}")], &[&mm]));
            nodes.push(node("Add", &ad, &[&mm, &format!("{gn}_b{l}")], &[&ad]));
            if l + 1 < layers.len() {
                let r = format!("{p}{gn}_r{l}");
                nodes.push(node("Relu", &r, &[&ad], &[&r]));
                a = r;
            } else {
                let out = format!("{p}{gn}");
                let op = if g == 3 { "Tanh" } else { "Sigmoid" };
                nodes.push(node(op, &out, &[&ad], &[&out]));
                gate_out.push(out);
            }
        }
    }
    let (fc, ig, tc) = (format!("{p}fc"), format!("{p}ig"), format!("{p}tc"));
    nodes.push(node("Mul", &fc, &[&gate_out[0], c_prev], &[&fc]));
    nodes.push(node("Mul", &ig, &[&gate_out[1], &gate_out[3]], &[&ig]));
    nodes.push(node("Add", c_out, &[&fc, &ig], &[c_out]));
    nodes.push(node("Tanh", &tc, &[c_out], &[&tc]));
    nodes.push(node("Mul", h_out, &[&gate_out[2], &tc], &[h_out]));
}

// ---------------------------------------------------------------------------------------------

/// The cell as the body of an ONNX `Scan` over `X`'s axis 0.
pub fn scan_model(m: &Hlstm, steps: usize, batch: usize, weights: ScanWeights) -> ModelProto {
    let (nx, nh) = (m.inputs, m.hidden);
    let mut body_nodes = Vec::new();
    matmul_cell(
        m,
        "",
        "x_t",
        "h_in",
        "c_in",
        "h_out",
        "c_out",
        &mut body_nodes,
    );
    body_nodes.push(node("Identity", "y_t", &["h_out"], &["y_t"]));
    let (outer_w, body_w) = match weights {
        ScanWeights::Outer => (matmul_weights(m), vec![]),
        ScanWeights::Body => (vec![], matmul_weights(m)),
    };
    let body = graph(
        "hlstm_cell",
        vec![
            f32_info("h_in", &[batch, nh]),
            f32_info("c_in", &[batch, nh]),
            f32_info("x_t", &[batch, nx]),
        ],
        vec![
            f32_info("h_out", &[batch, nh]),
            f32_info("c_out", &[batch, nh]),
            f32_info("y_t", &[batch, nh]),
        ],
        body_w,
        body_nodes,
    );
    let mut inits = vec![f32_tensor("zeros_BH", &[batch, nh], &vec![0.0; batch * nh])];
    inits.extend(outer_w);
    let scan = with(
        node(
            "Scan",
            "scan",
            &["zeros_BH", "zeros_BH", "X"],
            &["Y_h", "Y_c", "Y"],
        ),
        vec![graph_attr("body", body), int_attr("num_scan_inputs", 1)],
    );
    let (inputs, outputs) = io(m, steps, batch);
    wrap(graph("hlstm_scan", inputs, outputs, inits, vec![scan]))
}

/// T copies of the cell in the main graph.
pub fn unrolled_model(m: &Hlstm, steps: usize, batch: usize, slicing: XSlicing) -> ModelProto {
    let nh = m.hidden;
    let mut inits = matmul_weights(m);
    let zeros = vec![0.0; batch * nh];
    inits.push(f32_tensor("h_0", &[batch, nh], &zeros));
    inits.push(f32_tensor("c_0", &[batch, nh], &zeros));
    inits.push(i64_tensor("axes_0", &[1], &[0]));
    let mut nodes = Vec::new();
    let xs: Vec<String> = (0..steps).map(|t| format!("x_{t}")).collect();
    match slicing {
        XSlicing::Gather => {
            for (t, x) in xs.iter().enumerate() {
                let idx = format!("idx_{t}");
                inits.push(i64_tensor(&idx, &[], &[t as i64]));
                nodes.push(with(
                    node("Gather", &format!("gather_{t}"), &["X", &idx], &[x]),
                    vec![int_attr("axis", 0)],
                ));
            }
        }
        XSlicing::SplitSqueeze => {
            let pieces: Vec<String> = (0..steps).map(|t| format!("x3_{t}")).collect();
            let refs: Vec<&str> = pieces.iter().map(|s| s.as_str()).collect();
            nodes.push(with(
                node("Split", "split_x", &["X"], &refs),
                vec![int_attr("axis", 0)],
            ));
            for (t, x) in xs.iter().enumerate() {
                nodes.push(node(
                    "Squeeze",
                    &format!("squeeze_{t}"),
                    &[&pieces[t], "axes_0"],
                    &[x],
                ));
            }
        }
    }
    let mut ys = Vec::new();
    for (t, x) in xs.iter().enumerate() {
        let (h_prev, c_prev) = (format!("h_{t}"), format!("c_{t}"));
        let h_next = if t + 1 == steps {
            "Y_h".to_string()
        } else {
            format!("h_{}", t + 1)
        };
        let c_next = format!("c_{}", t + 1);
        matmul_cell(
            m,
            &format!("t{t}_"),
            x,
            &h_prev,
            &c_prev,
            &h_next,
            &c_next,
            &mut nodes,
        );
        let y = format!("y_{t}");
        nodes.push(node(
            "Unsqueeze",
            &format!("unsqueeze_{t}"),
            &[&h_next, "axes_0"],
            &[&y],
        ));
        ys.push(y);
    }
    let refs: Vec<&str> = ys.iter().map(|s| s.as_str()).collect();
    nodes.push(with(
        node("Concat", "concat_y", &refs, &["Y"]),
        vec![int_attr("axis", 0)],
    ));
    let (inputs, outputs) = io(m, steps, batch);
    wrap(graph("hlstm_unrolled", inputs, outputs, inits, nodes))
}

/// Per-gate Gemm chains, unrolled the way `torch.onnx.export` (TorchScript) writes an
/// `nn.ModuleList` of four `nn.Sequential(Linear, ReLU, ..., Linear)` called in a time loop.
pub fn gemm_model(m: &Hlstm, steps: usize, batch: usize) -> ModelProto {
    let nh = m.hidden;
    let mut inits = Vec::new();
    for (g, layers) in m.gates.iter().enumerate() {
        for (l, layer) in layers.iter().enumerate() {
            let base = format!("gates.{g}.{}", 2 * l);
            inits.push(f32_tensor(
                &format!("{base}.weight"),
                &[layer.n_out, layer.n_in],
                &layer.transposed(),
            ));
            inits.push(f32_tensor(
                &format!("{base}.bias"),
                &[layer.n_out],
                &layer.b,
            ));
        }
    }
    let mut nodes = Vec::new();
    let mut nm = Namer::default();
    let zeros = vec![0.0; batch * nh];
    let mut h = String::new();
    let mut c = String::new();
    let mut ys = Vec::new();
    for t in 0..steps {
        let idx = nm.constant(&mut nodes, i64_tensor("", &[], &[t as i64]));
        let (gname, x_t) = nm.fresh("Gather");
        nodes.push(with(
            node("Gather", &gname, &["X", &idx], &[&x_t]),
            vec![int_attr("axis", 0)],
        ));
        if t == 0 {
            h = nm.constant(&mut nodes, f32_tensor("", &[batch, nh], &zeros));
        }
        let (cname, z) = nm.fresh("Concat");
        nodes.push(with(
            node("Concat", &cname, &[&x_t, &h], &[&z]),
            vec![int_attr("axis", 1)],
        ));
        let mut gate_out = Vec::new();
        for (g, layers) in m.gates.iter().enumerate() {
            let mut a = z.clone();
            for l in 0..layers.len() {
                let suffix = if t == 0 {
                    String::new()
                } else {
                    format!("_{t}")
                };
                let scope = format!("/gates.{g}/gates.{g}.{}{suffix}", 2 * l);
                let name = format!("{scope}/Gemm");
                let out = format!("{name}_output_0");
                let base = format!("gates.{g}.{}", 2 * l);
                nodes.push(with(
                    node(
                        "Gemm",
                        &name,
                        &[&a, &format!("{base}.weight"), &format!("{base}.bias")],
                        &[&out],
                    ),
                    vec![
                        float_attr("alpha", 1.0),
                        float_attr("beta", 1.0),
                        int_attr("transB", 1),
                    ],
                ));
                a = out;
                if l + 1 < layers.len() {
                    let name = format!("/gates.{g}/gates.{g}.{}{suffix}/Relu", 2 * l + 1);
                    let out = format!("{name}_output_0");
                    nodes.push(node("Relu", &name, &[&a], &[&out]));
                    a = out;
                }
            }
            let (name, out) = nm.fresh(if g == 3 { "Tanh" } else { "Sigmoid" });
            nodes.push(node(
                if g == 3 { "Tanh" } else { "Sigmoid" },
                &name,
                &[&a],
                &[&out],
            ));
            gate_out.push(out);
        }
        if t == 0 {
            c = nm.constant(&mut nodes, f32_tensor("", &[batch, nh], &zeros));
        }
        let (n1, fc) = nm.fresh("Mul");
        nodes.push(node("Mul", &n1, &[&gate_out[0], &c], &[&fc]));
        let (n2, ig) = nm.fresh("Mul");
        nodes.push(node("Mul", &n2, &[&gate_out[1], &gate_out[3]], &[&ig]));
        let (n3, c_new) = nm.fresh("Add");
        nodes.push(node("Add", &n3, &[&fc, &ig], &[&c_new]));
        let (n4, tc) = nm.fresh("Tanh");
        nodes.push(node("Tanh", &n4, &[&c_new], &[&tc]));
        let (n5, mut h_new) = nm.fresh("Mul");
        if t + 1 == steps {
            h_new = "Y_h".to_string();
        }
        nodes.push(node("Mul", &n5, &[&gate_out[2], &tc], &[&h_new]));
        h = h_new;
        c = c_new;
        ys.push(h.clone());
    }
    let mut unsq = Vec::new();
    for y in &ys {
        let axes = nm.constant(&mut nodes, i64_tensor("", &[1], &[0]));
        let (name, out) = nm.fresh("Unsqueeze");
        nodes.push(node("Unsqueeze", &name, &[y, &axes], &[&out]));
        unsq.push(out);
    }
    let (name, _) = nm.fresh("Concat");
    let refs: Vec<&str> = unsq.iter().map(|s| s.as_str()).collect();
    nodes.push(with(
        node("Concat", &name, &refs, &["Y"]),
        vec![int_attr("axis", 0)],
    ));
    let (inputs, outputs) = io(m, steps, batch);
    wrap(graph("main_graph", inputs, outputs, inits, nodes))
}

/// A plain LSTM as one ONNX `LSTM` op (forward, default activations): input `X` `[T, B, X]`,
/// initializers `W` `[1, 4H, X]`, `R` `[1, 4H, H]`, `B` `[1, 8H]`, outputs `Y` `[T, 1, B, H]`
/// and `Y_h` `[1, B, H]`; no initial state (zeros).
pub fn lstm_model(m: &Lstm, steps: usize, batch: usize) -> ModelProto {
    let (nx, nh) = (m.inputs, m.hidden);
    let inits = vec![
        f32_tensor("W", &[1, 4 * nh, nx], &m.w),
        f32_tensor("R", &[1, 4 * nh, nh], &m.r),
        f32_tensor("B", &[1, 8 * nh], &m.b),
    ];
    let lstm = with(
        node("LSTM", "lstm", &["X", "W", "R", "B"], &["Y", "Y_h"]),
        vec![int_attr("hidden_size", nh as i64)],
    );
    wrap(graph(
        "lstm",
        vec![f32_info("X", &[steps, batch, nx])],
        vec![
            f32_info("Y", &[steps, 1, batch, nh]),
            f32_info("Y_h", &[1, batch, nh]),
        ],
        inits,
        vec![lstm],
    ))
}

/// The serialized [`lstm_model`].
pub fn lstm_model_bytes(m: &Lstm, steps: usize, batch: usize) -> Vec<u8> {
    lstm_model(m, steps, batch)
        .write_to_bytes()
        .expect("an ONNX model serializes")
}

/// Torch's naming: `/Op`, `/Op_1`, `/Op_2`, ... with outputs `/Op_K_output_0`.
#[derive(Default)]
struct Namer(std::collections::BTreeMap<&'static str, usize>);

impl Namer {
    fn fresh(&mut self, op: &'static str) -> (String, String) {
        let k = self.0.entry(op).or_default();
        let name = if *k == 0 {
            format!("/{op}")
        } else {
            format!("/{op}_{k}")
        };
        *k += 1;
        let out = format!("{name}_output_0");
        (name, out)
    }

    fn constant(&mut self, nodes: &mut Vec<NodeProto>, t: TensorProto) -> String {
        let (name, out) = self.fresh("Constant");
        nodes.push(with(
            node("Constant", &name, &[], &[&out]),
            vec![tensor_attr("value", t)],
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelgen::{Pruning, generate_lstm, random_input};
    use hlstm_ir::Tensor;

    /// The ONNX LSTM in plain f64 loops: gates i, o, f, c; `Y` `[T, B, H]` then the last h.
    fn lstm_reference(m: &Lstm, x: &[f32], steps: usize, batch: usize) -> (Vec<f64>, Vec<f64>) {
        let (nx, nh) = (m.inputs, m.hidden);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut h = vec![0.0f64; batch * nh];
        let mut c = vec![0.0f64; batch * nh];
        let mut y = Vec::new();
        for t in 0..steps {
            for b in 0..batch {
                let xt = &x[(t * batch + b) * nx..][..nx];
                let hp = h[b * nh..][..nh].to_vec();
                let pre = |row: usize| -> f64 {
                    let mut s = m.b[row] as f64 + m.b[4 * nh + row] as f64;
                    for (k, xv) in xt.iter().enumerate() {
                        s += m.w[row * nx + k] as f64 * *xv as f64;
                    }
                    for (k, hv) in hp.iter().enumerate() {
                        s += m.r[row * nh + k] as f64 * hv;
                    }
                    s
                };
                for j in 0..nh {
                    let i = sig(pre(j));
                    let o = sig(pre(nh + j));
                    let f = sig(pre(2 * nh + j));
                    let g = pre(3 * nh + j).tanh();
                    let cj = f * c[b * nh + j] + i * g;
                    c[b * nh + j] = cj;
                    h[b * nh + j] = o * cj.tanh();
                }
            }
            y.extend_from_slice(&h);
        }
        (y, h)
    }

    #[test]
    fn lstm_model_imports_and_runs_like_the_reference() {
        let (nx, nh, steps, batch) = (5, 6, 4, 2);
        let m = generate_lstm(nx, nh, 0.3, Pruning::Magnitude, 7);
        let (dense, nz_w, nz_r) = m.weight_counts();
        assert_eq!(dense, 4 * nh * (nx + nh));
        assert_eq!(nz_w, (0.3f64 * (4 * nh * nx) as f64).round() as usize);
        assert_eq!(nz_r, (0.3f64 * (4 * nh * nh) as f64).round() as usize);
        let g = hlstm_frontends::onnx::import_bytes(&lstm_model_bytes(&m, steps, batch), None)
            .expect("the LSTM model imports");
        let x = random_input(3, steps, batch, nx);
        let out = hlstm_ir::interp::run(
            &g,
            &[Tensor::from_f32(&[steps, batch, nx], x.clone()).unwrap()],
        )
        .expect("the interpreter runs it");
        let (y, y_h) = lstm_reference(&m, &x, steps, batch);
        assert_eq!(out[0].shape(), &[steps, 1, batch, nh]);
        assert_eq!(out[1].shape(), &[1, batch, nh]);
        for (got, want) in [(&out[0], &y), (&out[1], &y_h)] {
            let got = got.as_f32().unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(want.iter()) {
                assert!((*a as f64 - b).abs() <= 1e-5, "{a} vs {b}");
            }
        }
    }
}
