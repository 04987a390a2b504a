//! A stacked LSTM as ONNX `LSTM` ops (one per layer), the form every ONNX runtime has a fused
//! kernel for. Our cell computes [x, h] W + b with W [in + H, 4H] in gate order i, f, g, o;
//! ONNX's LSTM takes W [1, 4H, in] and R [1, 4H, H] (transposed, gate order i, o, f, c) and
//! B [1, 8H] (input and recurrent biases; ours goes in the first half, zeros in the second).

use crate::models::{Head, InputKind, ModelConfig};
use hlstm_frontends::onnx::export::{EXPORT_OPSET, tensor_proto};
use hlstm_ir::Tensor;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
    attribute_proto::AttributeType,
};

/// Our gate blocks in ONNX's order (i, o, f, c = our i, o, f, g).
const ONNX_ORDER: [usize; 4] = [0, 3, 1, 2];

fn info(name: &str, elem: i32, dims: &[Result<usize, &str>]) -> ValueInfoProto {
    let dims: Vec<hlstm_ir::Dim> = dims
        .iter()
        .map(|d| match d {
            Ok(n) => hlstm_ir::Dim::Known(*n),
            Err(s) => hlstm_ir::Dim::Sym(s.to_string()),
        })
        .collect();
    hlstm_frontends::onnx::export::value_info_proto(name, elem, Some(&dims))
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs;
    n
}

fn hidden_size(h: usize) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = "hidden_size".into();
    a.type_ = protobuf::EnumOrUnknown::new(AttributeType::INT);
    a.i = h as i64;
    a
}

/// `w` [rows, 4H] (rows `from..to` of it) as ONNX's [1, 4H, to - from].
fn onnx_weight(w: &[f32], h: usize, from: usize, to: usize) -> Vec<f32> {
    let cols = 4 * h;
    let mut out = Vec::with_capacity(cols * (to - from));
    for &g in &ONNX_ORDER {
        for j in 0..h {
            out.extend((from..to).map(|r| w[r * cols + g * h + j]));
        }
    }
    out
}

/// The model of `mc` (cell LSTM) with `params` in model order (`embed`?, then `l<k>.W`, `l<k>.b`
/// per layer, then `head.W`, `head.b`). `steps` and `batch` are fixed sizes or None for the
/// symbolic `T` and `N`.
pub fn model(
    mc: &ModelConfig,
    params: &[Tensor],
    steps: Option<usize>,
    batch: Option<usize>,
) -> Result<ModelProto, String> {
    let h = mc.hidden;
    let data = |k: usize| -> Result<Vec<f32>, String> {
        let t = params.get(k).ok_or("missing parameters")?;
        Ok(t.as_f32()
            .ok_or("parameters must be f32")?
            .iter()
            .copied()
            .collect())
    };
    let n: Result<usize, &str> = batch.ok_or("N");
    let t: Result<usize, &str> = steps.ok_or("T");
    let mut g = GraphProto::new();
    g.name = "lstm".into();
    let one = |name: &str, v: i64| {
        tensor_proto(name, &Tensor::from_i64(&[1], vec![v]).expect("one element"))
    };
    g.initializer.extend([one("axes0", 0), one("axes1", 1)]);
    let (mut seq, mut width, mut p) = match mc.input {
        InputKind::Features { size } => {
            g.input.push(info("X", 1, &[t, n, Ok(size)]));
            ("X".to_string(), size, 0)
        }
        InputKind::Tokens { embed, .. } => {
            g.input.push(info("tokens", 7, &[t, n]));
            g.initializer.push(tensor_proto("embed", &params[0]));
            g.node.push(node(
                "Gather",
                "embedding",
                &["embed", "tokens"],
                &["embedded"],
                vec![],
            ));
            ("embedded".to_string(), embed, 1)
        }
    };
    let lm = matches!(mc.head, Head::NextToken { .. });
    let mut last_h = String::new();
    for l in 0..mc.layers {
        let (w, b) = (data(p)?, data(p + 1)?);
        p += 2;
        let name = |s: &str| format!("l{l}.{s}");
        let wt =
            Tensor::from_f32(&[1, 4 * h, width], onnx_weight(&w, h, 0, width)).ok_or("W size")?;
        let rt = Tensor::from_f32(&[1, 4 * h, h], onnx_weight(&w, h, width, width + h))
            .ok_or("R size")?;
        let mut bias: Vec<f32> = ONNX_ORDER
            .iter()
            .flat_map(|&k| b[k * h..(k + 1) * h].iter().copied())
            .collect();
        bias.resize(8 * h, 0.0);
        g.initializer.push(tensor_proto(&name("W"), &wt));
        g.initializer.push(tensor_proto(&name("R"), &rt));
        g.initializer.push(tensor_proto(
            &name("B"),
            &Tensor::from_f32(&[1, 8 * h], bias).ok_or("B size")?,
        ));
        let (y, yh, yc) = (name("Y"), name("Y_h"), name("Y_c"));
        let mut ins = vec![seq.clone(), name("W"), name("R"), name("B"), String::new()];
        if lm {
            // Streaming: the state comes in as h0/c0 [N, H] and leaves as hT/cT.
            for s in ["h0", "c0"] {
                let input = format!("{s}.l{l}");
                g.input.push(info(&input, 1, &[n, Ok(h)]));
                let u = format!("{input}.3d");
                g.node
                    .push(node("Unsqueeze", &u, &[&input, "axes0"], &[&u], vec![]));
                ins.push(u);
            }
        }
        let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        g.node.push(node(
            "LSTM",
            &format!("layer{l}"),
            &ins,
            &[&y, &yh, &yc],
            vec![hidden_size(h)],
        ));
        let next = format!("layer{l}.y");
        g.node
            .push(node("Squeeze", &next, &[&y, "axes1"], &[&next], vec![]));
        let hl = format!("hT.l{l}");
        g.node
            .push(node("Squeeze", &hl, &[&yh, "axes0"], &[&hl], vec![]));
        if lm {
            let cl = format!("cT.l{l}");
            g.node
                .push(node("Squeeze", &cl, &[&yc, "axes0"], &[&cl], vec![]));
        }
        (seq, width, last_h) = (next, h, hl);
    }
    g.initializer.push(tensor_proto("head.W", &params[p]));
    g.initializer.push(tensor_proto("head.b", &params[p + 1]));
    let from = if lm { seq } else { last_h };
    g.node.push(node(
        "MatMul",
        "head.mm",
        &[&from, "head.W"],
        &["head.mm"],
        vec![],
    ));
    g.node.push(node(
        "Add",
        "logits",
        &["head.mm", "head.b"],
        &["logits"],
        vec![],
    ));
    match mc.head {
        Head::Classifier { classes } => g.output.push(info("logits", 1, &[n, Ok(classes)])),
        Head::NextToken { vocab } => {
            g.output.push(info("logits", 1, &[t, n, Ok(vocab)]));
            for l in 0..mc.layers {
                g.output.push(info(&format!("hT.l{l}"), 1, &[n, Ok(h)]));
                g.output.push(info(&format!("cT.l{l}"), 1, &[n, Ok(h)]));
            }
        }
    }
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "hlstmc train".into();
    let mut os = OperatorSetIdProto::new();
    os.version = EXPORT_OPSET;
    m.opset_import.push(os);
    m.graph = Some(g).into();
    Ok(m)
}
