//! Recurrence bodies: the LSTM cell and the H-LSTM cell. Both carry (h, c), scan the layer's
//! input x_t (and, for the H-LSTM with dropout, one mask per hidden layer), and read their
//! weights as invariants, which the layer feeds from graph inputs (the parameters).
//!
//! Gate order is i, f, g, o: c' = f * c + i * g, h' = o * tanh(c'). Only ops with an ONNX
//! counterpart are used (MatMul, Add, Concat, Split, Sigmoid, Tanh, Relu, Mul), so the forward
//! graph can be written as an ONNX Scan.

use super::{CellKind, Param};
use crate::builder::{Builder, R, compact};
use hlstm_ir::{Act, BinOp, DType, Dim, Graph, Op, TensorType, Value};

/// A cell body and what its inputs after (h, c, x_t) are, in order.
pub(crate) struct Cell {
    pub body: Graph,
    /// Per-step masks (scanned after x_t): name and per-step dims [batch, width].
    pub masks: Vec<(String, usize)>,
    /// Weights (invariants), in body input order.
    pub params: Vec<Param>,
}

pub(crate) const GATES: [(&str, Act); 4] = [
    ("i", Act::Sigmoid),
    ("f", Act::Sigmoid),
    ("g", Act::Tanh),
    ("o", Act::Sigmoid),
];

fn f32_ty(dims: &[Dim]) -> TensorType {
    TensorType::new(DType::F32, dims.to_vec())
}

/// Builds layer `layer`'s cell: input width `x`, state width `h`, batch `n`.
pub(crate) fn cell(
    kind: &CellKind,
    layer: usize,
    n: &Dim,
    x: usize,
    h: usize,
    dropout: bool,
) -> R<Cell> {
    let mut b = Builder::new(Graph::new());
    let nh = [n.clone(), Dim::Known(h)];
    let hv = b.g.add_input("h", f32_ty(&nh));
    let cv = b.g.add_input("c", f32_ty(&nh));
    let xv = b.g.add_input("x", f32_ty(&[n.clone(), Dim::Known(x)]));
    let pre = format!("l{layer}");
    let (gates, masks, params) = match kind {
        CellKind::Lstm => {
            let w =
                b.g.add_input("W", f32_ty(&[Dim::Known(x + h), Dim::Known(4 * h)]));
            let bias = b.g.add_input("b", f32_ty(&[Dim::Known(4 * h)]));
            let z = b.op("z", Op::Concat { axis: 1 }, &[xv, hv])?;
            let zw = b.op("zw", Op::MatMul, &[z, w])?;
            let pre_act = b.bin("gates", BinOp::Add, zw, bias)?;
            let split = Op::Split {
                axis: 1,
                num_outputs: 4,
            };
            let parts = b.node("gate", split, &[Some(pre_act)])?;
            let params = vec![
                Param::weight(&format!("{pre}.W"), &[x + h, 4 * h], x + h),
                Param::bias(&format!("{pre}.b"), &[4 * h], x + h),
            ];
            (parts, Vec::new(), params)
        }
        CellKind::Hlstm {
            hidden_layers,
            hidden_width,
        } => hlstm_gates(
            &mut b,
            &pre,
            n,
            [xv, hv],
            (x, h),
            (*hidden_layers, *hidden_width),
            dropout,
        )?,
    };
    let mut act = Vec::new();
    for ((name, a), v) in GATES.iter().zip(&gates) {
        act.push(b.op(name, Op::Unary(*a), &[*v])?);
    }
    let fc = b.bin("fc", BinOp::Mul, act[1], cv)?;
    let ig = b.bin("ig", BinOp::Mul, act[0], act[2])?;
    let c1 = b.bin("c1", BinOp::Add, fc, ig)?;
    let tc = b.op("tc", Op::Unary(Act::Tanh), &[c1])?;
    let h1 = b.bin("h1", BinOp::Mul, act[3], tc)?;
    b.g.outputs = vec![("h".into(), h1), ("c".into(), c1), ("y".into(), h1)];
    // Inputs first, then the nodes in order: the body's text declares every input in its header.
    Ok(Cell {
        body: compact(&b.g)?,
        masks,
        params,
    })
}

type Gates = (Vec<Value>, Vec<(String, usize)>, Vec<Param>);

/// The H-LSTM gates: for each gate, `layers` hidden layers of `width` ReLU units (each
/// followed by its dropout mask when `dropout`), then a linear layer to the state width. Body
/// inputs are added in the order the layer feeds them: masks (scanned), then weights.
fn hlstm_gates(
    b: &mut Builder,
    pre: &str,
    n: &Dim,
    [xv, hv]: [Value; 2],
    (x, h): (usize, usize),
    (layers, width): (usize, usize),
    dropout: bool,
) -> R<Gates> {
    let z = b.op("z", Op::Concat { axis: 1 }, &[xv, hv])?;
    let mut masks = Vec::new();
    let mut mask_in = Vec::new();
    if dropout {
        for (g, _) in GATES {
            for k in 0..layers {
                let name = format!("drop.{pre}.{g}{k}");
                let v =
                    b.g.add_input(&name, f32_ty(&[n.clone(), Dim::Known(width)]));
                mask_in.push(v);
                masks.push((name, width));
            }
        }
    }
    let mut params = Vec::new();
    let mut out = Vec::new();
    for (gi, (g, _)) in GATES.iter().enumerate() {
        let mut a = z;
        let mut fan_in = x + h;
        for k in 0..layers {
            let w = format!("{pre}.{g}.W{k}");
            let bias = format!("{pre}.{g}.b{k}");
            let wv =
                b.g.add_input(&w, f32_ty(&[Dim::Known(fan_in), Dim::Known(width)]));
            let bv = b.g.add_input(&bias, f32_ty(&[Dim::Known(width)]));
            params.push(Param::relu_weight(&w, &[fan_in, width], fan_in));
            params.push(Param::bias(&bias, &[width], fan_in));
            let m = b.op(&format!("{g}{k}.mm"), Op::MatMul, &[a, wv])?;
            let s = b.bin(&format!("{g}{k}.pre"), BinOp::Add, m, bv)?;
            a = b.op(&format!("{g}{k}"), Op::Unary(Act::Relu), &[s])?;
            if dropout {
                a = b.bin(
                    &format!("{g}{k}.drop"),
                    BinOp::Mul,
                    a,
                    mask_in[gi * layers + k],
                )?;
            }
            fan_in = width;
        }
        let w = format!("{pre}.{g}.Wout");
        let bias = format!("{pre}.{g}.bout");
        let wv =
            b.g.add_input(&w, f32_ty(&[Dim::Known(fan_in), Dim::Known(h)]));
        let bv = b.g.add_input(&bias, f32_ty(&[Dim::Known(h)]));
        params.push(Param::weight(&w, &[fan_in, h], fan_in));
        params.push(Param::bias(&bias, &[h], fan_in));
        let m = b.op(&format!("{g}.mm"), Op::MatMul, &[a, wv])?;
        out.push(b.bin(&format!("{g}.pre"), BinOp::Add, m, bv)?);
    }
    Ok((out, masks, params))
}
