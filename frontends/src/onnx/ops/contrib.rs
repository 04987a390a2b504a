//! `com.microsoft` ops that ONNX Runtime's graph optimizer writes into the models it saves
//! (`SessionOptions.optimized_model_filepath`), mapped onto the IR's existing ops, and the
//! reasons for the contrib ops hlstmc refuses. docs/contrib-ops.md lists both.

use super::{ImportFn, need, opt, out_names};
use crate::onnx::ctx::{Ctx, attr, attr_f, attr_i, attr_s};
use hlstm_ir::{Act, BinOp, Op, Value};
use onnx_protobuf::NodeProto;

pub const MS_DOMAIN: &str = "com.microsoft";

/// The importer of a `com.microsoft` op.
pub fn lookup(op_type: &str) -> Option<ImportFn> {
    Some(match op_type {
        "FusedGemm" => fused_gemm,
        // TransposeMatMul is FusedMatMul's older name; ONNX Runtime runs both with one kernel.
        "FusedMatMul" | "TransposeMatMul" => fused_matmul,
        "QuickGelu" => quick_gelu,
        _ => return None,
    })
}

/// Why a contrib op of a known family is refused (None: no particular reason is known).
pub fn refusal(domain: &str, op_type: &str) -> Option<&'static str> {
    if domain == "com.microsoft.nchwc" {
        return Some(
            "a blocked-layout (NCHWc) convolution op that ONNX Runtime writes at ORT_ENABLE_ALL \
             for this machine's vector width; save the model at ORT_ENABLE_EXTENDED instead",
        );
    }
    if domain != MS_DOMAIN {
        return None;
    }
    Some(match op_type {
        "DynamicQuantizeLSTM"
        | "DynamicQuantizeMatMul"
        | "MatMulIntegerToFloat"
        | "MatMulNBits"
        | "MatMulBnb4"
        | "QAttention"
        | "QGemm"
        | "QLinearAdd"
        | "QLinearMul"
        | "QLinearSigmoid"
        | "QLinearLeakyRelu"
        | "QLinearConcat"
        | "QLinearConv"
        | "QLinearMatMul"
        | "QLinearSoftmax"
        | "QLinearAveragePool"
        | "QLinearGlobalAveragePool"
        | "QuantizeLinear"
        | "DequantizeLinear"
        | "DynamicQuantizeLinear"
        | "GatherBlockQuantized" => {
            "a quantized op (integer weights or activations): hlstmc computes in float32; \
             import the float model it was quantized from"
        }
        "FusedConv"
        | "NhwcConv"
        | "NhwcFusedConv"
        | "NhwcMaxPool"
        | "QLinearConvTranspose"
        | "FusedConvTranspose"
        | "ConvTransposeWithDynamicPads" => "a convolution op: the IR has no convolution",
        "Attention"
        | "MultiHeadAttention"
        | "GroupQueryAttention"
        | "PackedAttention"
        | "EmbedLayerNormalization"
        | "SkipLayerNormalization"
        | "SkipSimplifiedLayerNormalization"
        | "RotaryEmbedding"
        | "BiasGelu"
        | "FastGelu"
        | "Gelu"
        | "BiasSoftmax"
        | "BiasDropout"
        | "BiasAdd"
        | "BiasSplitGelu" => {
            "a transformer fusion: the IR has no attention, normalization or erf; the \
             optimizer writes it only for transformer graphs"
        }
        "AttnLSTM" => "an attention LSTM: the IR's recurrence has no attention mechanism",
        _ => return None,
    })
}

/// FusedGemm: Gemm (alpha, beta, transA, transB) followed by the activation named by
/// `activation`, its parameters in `activation_alpha`, `activation_beta`, `activation_gamma`.
pub fn fused_gemm(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let acts = activation(node)?;
    let op = Op::Gemm {
        alpha: attr_f(node, "alpha", 1.0),
        beta: attr_f(node, "beta", 1.0),
        trans_a: attr_i(node, "transA", 0) != 0,
        trans_b: attr_i(node, "transB", 0) != 0,
    };
    let args = [
        Some(need(ops, 0, "A")?),
        Some(need(ops, 1, "B")?),
        opt(ops, 2),
    ];
    if acts.is_empty() {
        return ctx.add(label, op, &args, &out_names(node));
    }
    let y = ctx.add1(&format!("{label}/gemm"), op, &args)?;
    apply(ctx, node, label, y, &acts)
}

/// FusedMatMul: alpha * op(A) @ op(B), numpy broadcasting. transBatchX moves X's first dim
/// behind its other batch dims ([d0, d1..dn-2, m, k] -> [d1..dn-2, d0, m, k]: what ONNX
/// Runtime computes, measured), then transX swaps the last two dims.
pub fn fused_matmul(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let (a, b) = (need(ops, 0, "A")?, need(ops, 1, "B")?);
    let batch = [
        attr_i(node, "transBatchA", 0) != 0,
        attr_i(node, "transBatchB", 0) != 0,
    ];
    let trans = [
        attr_i(node, "transA", 0) != 0,
        attr_i(node, "transB", 0) != 0,
    ];
    let ranks = [ctx.ty(a).rank(), ctx.ty(b).rank()];
    if batch[0] || batch[1] {
        // ONNX Runtime refuses these too (matmul_helper.h).
        match ranks {
            [Some(ra), Some(rb)] if ra == rb && ra >= 3 => {}
            _ => {
                return Err(format!(
                    "transBatchA/transBatchB need A and B of one rank, 3 or more (ranks {} and {})",
                    rank_text(ranks[0]),
                    rank_text(ranks[1])
                ));
            }
        }
    }
    let mut args = [a, b];
    for (i, name) in ["A", "B"].iter().enumerate() {
        if !batch[i] && !trans[i] {
            continue;
        }
        let Some(r) = ranks[i] else {
            return Err(format!("trans{name} needs {name} of known rank"));
        };
        if r < 2 {
            return Err(format!(
                "trans{name} needs {name} of rank 2 or more (rank {r})"
            ));
        }
        let mut perm: Vec<usize> = if batch[i] {
            (1..r - 1).chain([0, r - 1]).collect()
        } else {
            (0..r).collect()
        };
        if trans[i] {
            perm.swap(r - 2, r - 1);
        }
        args[i] = ctx.add1(
            &format!("{label}/transpose_{name}"),
            Op::Transpose { perm: Some(perm) },
            &[Some(args[i])],
        )?;
    }
    let alpha = attr_f(node, "alpha", 1.0);
    if alpha == 1.0 {
        return ctx.add(
            label,
            Op::MatMul,
            &[Some(args[0]), Some(args[1])],
            &out_names(node),
        );
    }
    let y = ctx.add1(
        &format!("{label}/matmul"),
        Op::MatMul,
        &[Some(args[0]), Some(args[1])],
    )?;
    ctx.add(
        &format!("{label}/alpha"),
        Op::Unary(Act::Affine { alpha, beta: 0.0 }),
        &[Some(y)],
        &out_names(node),
    )
}

/// QuickGelu: x * sigmoid(alpha * x) (alpha defaults to 1.702; with alpha 1 it is SiLU/swish,
/// which ONNX Runtime's QuickGeluFusion also rewrites into this op).
pub fn quick_gelu(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "X")?;
    let alpha = attr_f(node, "alpha", 1.702);
    let mut s = x;
    if alpha != 1.0 {
        s = ctx.add1(
            &format!("{label}/scale"),
            Op::Unary(Act::Affine { alpha, beta: 0.0 }),
            &[Some(s)],
        )?;
    }
    let s = ctx.add1(
        &format!("{label}/sigmoid"),
        Op::Unary(Act::Sigmoid),
        &[Some(s)],
    )?;
    ctx.add(
        label,
        Op::Binary(BinOp::Mul),
        &[Some(x), Some(s)],
        &out_names(node),
    )
}

fn rank_text(r: Option<usize>) -> String {
    r.map_or("unknown".into(), |r| r.to_string())
}

/// The elementwise steps of a fused activation, in order (empty: none). ONNX Runtime copies
/// the activation node's attributes with an `activation_` prefix; absent ones take the ONNX
/// defaults of that activation.
fn activation(node: &NodeProto) -> Result<Vec<Act>, String> {
    let Some(name) = attr_s(node, "activation") else {
        return Ok(vec![]);
    };
    let p = |k: &str, default: f32| attr_f(node, &format!("activation_{k}"), default);
    let need_p = |k: &str| {
        attr(node, &format!("activation_{k}"))
            .map(|a| a.f)
            .ok_or_else(|| format!("activation {name} needs the attribute activation_{k}"))
    };
    Ok(match name.as_str() {
        "" | "Identity" => vec![],
        "Relu" => vec![Act::Relu],
        "Sigmoid" => vec![Act::Sigmoid],
        "Tanh" => vec![Act::Tanh],
        "Softsign" => vec![Act::Softsign],
        "Softplus" => vec![Act::Softplus],
        "LeakyRelu" => vec![Act::LeakyRelu {
            alpha: p("alpha", 0.01),
        }],
        "HardSigmoid" => vec![Act::HardSigmoid {
            alpha: p("alpha", 0.2),
            beta: p("beta", 0.5),
        }],
        "Elu" => vec![Act::Elu {
            alpha: p("alpha", 1.0),
        }],
        "ThresholdedRelu" => vec![Act::ThresholdedRelu {
            alpha: p("alpha", 1.0),
        }],
        // gamma * elu_alpha(x)
        "Selu" => selu(p("alpha", SELU_ALPHA), p("gamma", SELU_GAMMA)),
        "ScaledTanh" => vec![Act::ScaledTanh {
            alpha: need_p("alpha")?,
            beta: need_p("beta")?,
        }],
        // alpha * softplus(beta * x)
        "ParametricSoftplus" => vec![
            Act::Affine {
                alpha: need_p("beta")?,
                beta: 0.0,
            },
            Act::Softplus,
            Act::Affine {
                alpha: need_p("alpha")?,
                beta: 0.0,
            },
        ],
        other => {
            return Err(format!(
                "activation '{other}' is not one ONNX Runtime fuses (Relu, Sigmoid, Tanh, \
                 LeakyRelu, HardSigmoid, Elu, Selu, Softsign, Softplus, ThresholdedRelu, \
                 ScaledTanh, ParametricSoftplus)"
            ));
        }
    })
}

pub const SELU_ALPHA: f32 = 1.673_263_2;
pub const SELU_GAMMA: f32 = 1.050_701;

/// The default-domain Selu (here because FusedGemm's Selu shares its form).
pub fn selu_op(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    ops: &[Option<Value>],
) -> Result<Vec<Value>, String> {
    let x = need(ops, 0, "X")?;
    let acts = selu(
        attr_f(node, "alpha", SELU_ALPHA),
        attr_f(node, "gamma", SELU_GAMMA),
    );
    apply(ctx, node, label, x, &acts)
}

/// Selu as the IR writes it: gamma * elu_alpha(x).
pub fn selu(alpha: f32, gamma: f32) -> Vec<Act> {
    vec![
        Act::Elu { alpha },
        Act::Affine {
            alpha: gamma,
            beta: 0.0,
        },
    ]
}

/// Applies `acts` to `x` in order; the last result takes the node's output name.
pub fn apply(
    ctx: &mut Ctx,
    node: &NodeProto,
    label: &str,
    x: Value,
    acts: &[Act],
) -> Result<Vec<Value>, String> {
    let mut y = x;
    for (i, act) in acts.iter().enumerate() {
        let op = Op::Unary(*act);
        let name = format!("{label}/{}", act.name());
        if i + 1 == acts.len() {
            return ctx.add(&name, op, &[Some(y)], &out_names(node));
        }
        y = ctx.add1(&name, op, &[Some(y)])?;
    }
    Ok(vec![y])
}
