//! The trained forward model as ONNX: the forward graph (no loss, no dropout) with the weights
//! as constants (outer initializers of each layer's Scan) and the data as the only input.
//!
//! A classifier reads `X` [T, N, F] and writes `logits` [N, C]: its initial states are zeros
//! made inside the model, [N, H] from X's batch dimension (Shape, Concat, ConstantOfShape) when
//! N is symbolic, constants when the export batch is fixed. A language model keeps its state
//! inputs and outputs (`h0.l<k>`, `c0.l<k>`, `hT.l<k>`, `cT.l<k>`) so it can stream.
//!
//! A language model on text also carries its vocabulary, window and split as the metadata
//! property `hlstmc.text` (`text_meta.rs`), which `hlstmc eval --text` reads.
//!
//! A stacked LSTM is written with ONNX `LSTM` ops instead (`lstm_op.rs`) unless the config's
//! `export.lstm_op` is false.

mod lstm_op;
mod text_meta;

pub use text_meta::{KEY as TEXT_METADATA_KEY, TextMeta};

use crate::builder::{Builder, compact};
use crate::models::CellKind;
use crate::models::{self, Dims, InputKind, Model};
use crate::train::{Session, Task, model_config};
use crate::{Error, models::Head};
use hlstm_ir::{Dim, Graph, Op, Tensor, Value};
use protobuf::Message;

fn input(g: &Graph, name: &str) -> Result<Value, Error> {
    g.inputs
        .iter()
        .map(|&n| Value { node: n, slot: 0 })
        .find(|v| g.value_info(*v).name == name)
        .ok_or_else(|| Error::new(format!("the model has no input '{name}'")))
}

fn remove_input(g: &mut Graph, v: Value) {
    g.nodes.remove_node(v.node);
    g.inputs.retain(|&n| n != v.node);
}

/// `m`'s graph with `params` (in `m.params` order) as constants and, for a classifier, zero
/// initial states and only the logits as output.
pub fn freeze(m: &Model, params: &[Tensor], classifier: bool) -> Result<Graph, Error> {
    let e = |s: String| Error::new(format!("freezing the model: {s}"));
    let mut b = Builder::new(m.graph.clone());
    for (p, t) in m.params.iter().zip(params) {
        let v = input(&b.g, &p.name)?;
        let c = b.g.add_const(&p.name, t.clone());
        b.g.replace_uses(v, c);
        remove_input(&mut b.g, v);
    }
    if classifier {
        let x = input(&b.g, "X")?;
        let mut batch = None;
        for (name, dims) in &m.states {
            let v = input(&b.g, name)?;
            let h = dims[1]
                .known()
                .ok_or_else(|| e(format!("state '{name}' has no known width")))?;
            let zeros = match dims[0] {
                Dim::Known(n) => b.g.add_const(
                    &format!("zeros.{name}"),
                    Tensor::zeros(hlstm_ir::DType::F32, &[n, h]),
                ),
                _ => {
                    let n = match batch {
                        Some(n) => n,
                        None => {
                            let op = Op::Shape {
                                start: 1,
                                end: Some(2),
                            };
                            *batch.insert(b.op("batch", op, &[x]).map_err(e)?)
                        }
                    };
                    let hv = b.ints(&[h as i64]);
                    let shape = b
                        .op(&format!("{name}.shape"), Op::Concat { axis: 0 }, &[n, hv])
                        .map_err(e)?;
                    let value = Tensor::from_f32(&[1], vec![0.0]).expect("one element");
                    b.op(
                        &format!("{name}.zeros"),
                        Op::ConstantOfShape { value },
                        &[shape],
                    )
                    .map_err(e)?
                }
            };
            b.g.replace_uses(v, zeros);
            remove_input(&mut b.g, v);
        }
        b.g.outputs.retain(|(n, _)| n == "logits");
    }
    let g = compact(&b.g).map_err(e)?;
    hlstm_ir::verify::verify(&g).map_err(|err| e(err.to_string()))?;
    Ok(g)
}

/// The session's trained model as a frozen forward graph, at the export batch of its config.
pub fn frozen(s: &Session) -> Result<Graph, Error> {
    let mc = model_config(&s.cfg, &s.task);
    let classifier = matches!(mc.head, Head::Classifier { .. });
    let m = match (s.cfg.export.batch, &mc.input) {
        (Some(n), InputKind::Features { .. }) => {
            let steps = s
                .forward
                .graph
                .value_type(input(&s.forward.graph, "X")?)
                .shape
                .as_ref()
                .map(|d| d[0].clone())
                .unwrap_or(Dim::Unknown);
            let dims = Dims {
                steps,
                batch: Dim::Known(n),
            };
            models::build(
                &models::ModelConfig {
                    dropout: false,
                    ..mc
                },
                &dims,
                false,
            )?
        }
        _ => s.forward.clone(),
    };
    freeze(&m, &s.param_tensors(), classifier)
}

/// The session's trained model as serialized ONNX.
pub fn onnx_bytes(s: &Session) -> Result<Vec<u8>, Error> {
    let mc = model_config(&s.cfg, &s.task);
    let mut model = if mc.cell == CellKind::Lstm && s.cfg.export.lstm_op {
        let steps = match &s.task {
            Task::Classify { train, .. } => Some(train.steps),
            Task::Lm { .. } => None,
        };
        lstm_op::model(&mc, &s.param_tensors(), steps, s.cfg.export.batch)
    } else {
        hlstm_frontends::onnx::export::export(&frozen(s)?, "hlstmc train")
    }
    .map_err(|e| Error::new(format!("ONNX export: {e}")))?;
    if let Task::Lm { vocab, .. } = &s.task
        && let Some(meta) = TextMeta::of(&s.cfg.data, vocab)
    {
        meta.write_to(&mut model);
    }
    model
        .write_to_bytes()
        .map_err(|e| Error::new(format!("ONNX export: {e}")))
}
