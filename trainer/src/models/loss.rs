//! Output heads and the softmax cross-entropy loss.
//!
//! The loss is mean(-log softmax(logits)[label]) over every labelled position. The IR has no
//! fused op for it, and needs none: log_softmax (computed in f64 by the interpreter, so it is
//! stable), a one-hot of the labels gathered from the rows of an identity, a product and a sum.
//! The gradient that autodiff derives from these is softmax(logits) - onehot, divided by the
//! count, exactly the fused op's.

use super::{Head, ModelConfig, Param};
use crate::builder::{Builder, R};
use hlstm_ir::{Act, BinOp, DType, Op, TensorType, Value};

/// Adds the head's parameters and logits (output `logits`) and, with labels, the loss (output
/// `loss`).
pub(crate) fn head(
    b: &mut Builder,
    cfg: &ModelConfig,
    params: &mut Vec<Param>,
    seq: Value,
    last_h: Value,
    labels: Option<Value>,
) -> R<()> {
    let (classes, from) = match cfg.head {
        Head::Classifier { classes } => (classes, last_h),
        Head::NextToken { vocab } => (vocab, seq),
    };
    let h = cfg.hidden;
    let w = Param::weight("head.W", &[h, classes], h);
    let bias = Param::bias("head.b", &[classes], h);
    let wv =
        b.g.add_input(&w.name, TensorType::known(DType::F32, &w.dims));
    let bv =
        b.g.add_input(&bias.name, TensorType::known(DType::F32, &bias.dims));
    params.extend([w, bias]);
    let mm = b.op("head.mm", Op::MatMul, &[from, wv])?;
    let logits = b.bin("logits", BinOp::Add, mm, bv)?;
    b.g.outputs.push(("logits".into(), logits));
    if let Some(labels) = labels {
        let loss = softmax_cross_entropy(b, logits, labels)?;
        b.g.outputs.push(("loss".into(), loss));
    }
    Ok(())
}

/// mean over positions of -log softmax(logits)[label]; logits [..., C], labels [...] (i64).
pub fn softmax_cross_entropy(b: &mut Builder, logits: Value, labels: Value) -> R<Value> {
    let d = b.dims(logits)?;
    let classes = *d.last().ok_or("logits must have a class axis")?;
    let count: usize = d[..d.len() - 1].iter().product();
    let ls = b.op("log_probs", Op::LogSoftmax { axis: -1 }, &[logits])?;
    let eye = b.eye(classes)?;
    let onehot = b.op("onehot", Op::Gather { axis: 0 }, &[eye, labels])?;
    let picked = b.bin("picked", BinOp::Mul, ls, onehot)?;
    let total = b.sum_to("total", picked, &[])?;
    let scale = -1.0 / count.max(1) as f32;
    let op = Op::Unary(Act::Affine {
        alpha: scale,
        beta: 0.0,
    });
    b.op("loss", op, &[total])
}
