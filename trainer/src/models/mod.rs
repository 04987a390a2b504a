//! Model builders: H-LSTMs and stacked LSTMs as forward graphs of the IR, one `recurrence` per
//! layer, with a classifier head on the last step or a next-token head on every step, and a
//! softmax cross-entropy loss.
//!
//! Every weight is a graph input (a parameter), so `training_graph` can differentiate with
//! respect to it and the trainer feeds the current values each step. The graph's inputs are, in
//! order: the data (`X` f32[T,N,F], or `tokens` i64[T,N]), `labels` (with the loss), the initial
//! states `h0.l<k>` and `c0.l<k>`, the dropout masks, then the parameters in `Model::params`
//! order. Its outputs: `logits`, `loss` (with the loss), and the final states `hT.l<k>`,
//! `cT.l<k>` (a language model carries them from one window to the next).

mod cells;
mod loss;

pub use loss::softmax_cross_entropy;

use crate::builder::{Builder, compact};
use crate::rng::Rng;
use crate::{Error, grad_output_name};
use hlstm_ir::{BinOp, DType, Dim, Graph, Op, Recurrence, Tensor, TensorType};

/// The recurrent cell of every layer.
#[derive(Clone, Debug, PartialEq)]
pub enum CellKind {
    /// One linear layer per gate (all four gates in one matmul).
    Lstm,
    /// `hidden_layers` ReLU layers of `hidden_width` units per gate before its linear output.
    Hlstm {
        hidden_layers: usize,
        hidden_width: usize,
    },
}

/// What the model reads at each step.
#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    /// `X`: f32[T, N, size].
    Features { size: usize },
    /// `tokens`: i64[T, N], looked up in a learned embedding of `vocab` rows of width `embed`.
    Tokens { vocab: usize, embed: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Head {
    /// Logits [N, classes] from the last layer's final state; labels i64[N].
    Classifier { classes: usize },
    /// Logits [T, N, vocab] at every step (the next token); labels i64[T, N].
    NextToken { vocab: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub cell: CellKind,
    pub input: InputKind,
    pub head: Head,
    /// Stacked recurrent layers (one recurrence each).
    pub layers: usize,
    /// State width of every layer.
    pub hidden: usize,
    /// Dropout mask inputs (f32, per step). H-LSTM: after each hidden ReLU layer. LSTM: on
    /// the outputs of every layer but the last (between stacked layers, as PyTorch's `dropout`).
    pub dropout: bool,
}

/// The sequence length and batch the graph is built for. Training needs both known (autodiff
/// works on static shapes); a graph for export may leave them symbolic, without a loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Dims {
    pub steps: Dim,
    pub batch: Dim,
}

impl Dims {
    pub fn known(steps: usize, batch: usize) -> Dims {
        Dims {
            steps: Dim::Known(steps),
            batch: Dim::Known(batch),
        }
    }
}

/// How a parameter's first values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in [-bound, bound).
    Uniform(f32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub dims: Vec<usize>,
    pub init: Init,
}

impl Param {
    /// A weight feeding a sigmoid, tanh or the logits: U(+-1/sqrt(fan_in)), as PyTorch's LSTM.
    pub(crate) fn weight(name: &str, dims: &[usize], fan_in: usize) -> Param {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        Param::new(name, dims, Init::Uniform(bound))
    }
    /// A weight feeding a ReLU: He uniform, U(+-sqrt(6/fan_in)), so activations keep their scale.
    pub(crate) fn relu_weight(name: &str, dims: &[usize], fan_in: usize) -> Param {
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        Param::new(name, dims, Init::Uniform(bound))
    }
    pub(crate) fn bias(name: &str, dims: &[usize], fan_in: usize) -> Param {
        Param::weight(name, dims, fan_in)
    }
    fn new(name: &str, dims: &[usize], init: Init) -> Param {
        Param {
            name: name.into(),
            dims: dims.to_vec(),
            init,
        }
    }
}

/// A built model: the forward graph and what its inputs are.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub params: Vec<Param>,
    /// Initial-state inputs (h0, c0 per layer) and their dims; feed zeros to start afresh.
    pub states: Vec<(String, Vec<Dim>)>,
    /// Dropout mask inputs and their dims [T, N, width].
    pub masks: Vec<(String, Vec<Dim>)>,
}

impl Model {
    /// First values of every parameter, in `params` order, reproducible from `seed`.
    pub fn init_params(&self, seed: u64) -> Vec<Tensor> {
        let mut rng = Rng::new(seed);
        self.params
            .iter()
            .map(|p| {
                let n = p.dims.iter().product();
                let Init::Uniform(bound) = p.init;
                let data = rng.vec(n, -bound, bound);
                Tensor::from_f32(&p.dims, data).expect("dims match the data")
            })
            .collect()
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }

    /// The training graph: the forward outputs and `grad.<param>` for every parameter.
    pub fn training_graph(&self, opts: &crate::Options) -> Result<Graph, Error> {
        crate::training_graph(&self.graph, "loss", &self.param_names(), opts)
    }

    /// The names of the training graph's gradient outputs, in `params` order.
    pub fn grad_names(&self) -> Vec<String> {
        self.params
            .iter()
            .map(|p| grad_output_name(&p.name))
            .collect()
    }
}

fn check(cfg: &ModelConfig) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::new(format!("model config: {m}")));
    if cfg.layers == 0 || cfg.hidden == 0 {
        return bad("layers and hidden must be at least 1");
    }
    if let CellKind::Hlstm {
        hidden_layers,
        hidden_width,
    } = cfg.cell
        && (hidden_layers == 0 || hidden_width == 0)
    {
        return bad("an H-LSTM needs at least one hidden layer of at least one unit");
    }
    let zero = match (&cfg.input, &cfg.head) {
        (InputKind::Features { size }, _) if *size == 0 => true,
        (InputKind::Tokens { vocab, embed }, _) if *vocab == 0 || *embed == 0 => true,
        (_, Head::Classifier { classes }) => *classes == 0,
        (_, Head::NextToken { vocab }) => *vocab == 0,
    };
    if zero {
        return bad("input sizes, vocabularies and classes must be at least 1");
    }
    Ok(())
}

/// Builds the forward graph of `cfg` for `dims`, with the loss when `with_loss`.
pub fn build(cfg: &ModelConfig, dims: &Dims, with_loss: bool) -> Result<Model, Error> {
    check(cfg)?;
    let e = |m: String| Error::new(format!("building the model: {m}"));
    let mut b = Builder::new(Graph::new());
    let (t, n) = (dims.steps.clone(), dims.batch.clone());
    let mut params = Vec::new();
    let (x, width) = match cfg.input {
        InputKind::Features { size } => {
            let ty = TensorType::new(DType::F32, vec![t.clone(), n.clone(), Dim::Known(size)]);
            (b.g.add_input("X", ty), size)
        }
        InputKind::Tokens { vocab, embed } => {
            let ty = TensorType::new(DType::I64, vec![t.clone(), n.clone()]);
            let tokens = b.g.add_input("tokens", ty);
            // Embedding rows are drawn like a layer's weights with fan-in 1: U(-1, 1).
            params.push(Param::weight("embed", &[vocab, embed], 1));
            (tokens, embed)
        }
    };
    let labels = match (&cfg.head, with_loss) {
        (_, false) => None,
        (Head::Classifier { .. }, true) => {
            Some(b.g.add_input("labels", TensorType::new(DType::I64, vec![n.clone()])))
        }
        (Head::NextToken { .. }, true) => {
            let ty = TensorType::new(DType::I64, vec![t.clone(), n.clone()]);
            Some(b.g.add_input("labels", ty))
        }
    };
    let state_dims = vec![n.clone(), Dim::Known(cfg.hidden)];
    let mut states = Vec::new();
    let mut state_in = Vec::new();
    for l in 0..cfg.layers {
        for s in ["h0", "c0"] {
            let name = format!("{s}.l{l}");
            let ty = TensorType::new(DType::F32, state_dims.clone());
            state_in.push(b.g.add_input(&name, ty));
            states.push((name, state_dims.clone()));
        }
    }
    let dropout = cfg.dropout && matches!(cfg.cell, CellKind::Hlstm { .. });
    let mut cells = Vec::new();
    let mut masks = Vec::new();
    let mut in_width = width;
    for l in 0..cfg.layers {
        let cell = cells::cell(&cfg.cell, l, &n, in_width, cfg.hidden, dropout).map_err(e)?;
        for (name, w) in &cell.masks {
            masks.push((name.clone(), vec![t.clone(), n.clone(), Dim::Known(*w)]));
        }
        in_width = cfg.hidden;
        cells.push(cell);
    }
    // A stacked LSTM with dropout: one mask per layer boundary, `drop.l<k>.in` [T, N, H]
    // multiplies layer k-1's outputs before layer k reads them (after the cells' masks).
    let between = cfg.dropout && matches!(cfg.cell, CellKind::Lstm) && cfg.layers > 1;
    let between_at = masks.len();
    if between {
        for l in 1..cfg.layers {
            let d = vec![t.clone(), n.clone(), Dim::Known(cfg.hidden)];
            masks.push((format!("drop.l{l}.in"), d));
        }
    }
    let mask_in: Vec<_> = masks
        .iter()
        .map(|(name, d)| b.g.add_input(name, TensorType::new(DType::F32, d.clone())))
        .collect();
    // Parameters last: the embedding, each layer's weights, the head.
    let mut param_in = Vec::new();
    for p in params.iter().chain(cells.iter().flat_map(|c| &c.params)) {
        param_in.push(b.g.add_input(&p.name, TensorType::known(DType::F32, &p.dims)));
    }
    params.extend(cells.iter().flat_map(|c| c.params.clone()));
    let mut seq = match cfg.input {
        InputKind::Features { .. } => x,
        InputKind::Tokens { .. } => {
            let gather = Op::Gather { axis: 0 };
            b.op("embedded", gather, &[param_in[0], x]).map_err(e)?
        }
    };
    let mut p_at = usize::from(matches!(cfg.input, InputKind::Tokens { .. }));
    let mut mask_at = 0;
    let mut last_h = None;
    let mut state_out = Vec::new();
    for (l, cell) in cells.into_iter().enumerate() {
        let (np, nm) = (cell.params.len(), cell.masks.len());
        if between && l > 0 {
            let m = mask_in[between_at + l - 1];
            seq = b
                .bin(&format!("layer{l}.drop"), BinOp::Mul, seq, m)
                .map_err(e)?;
        }
        let mut ops = vec![Some(state_in[2 * l]), Some(state_in[2 * l + 1]), Some(seq)];
        ops.extend(mask_in[mask_at..mask_at + nm].iter().map(|v| Some(*v)));
        ops.extend(param_in[p_at..p_at + np].iter().map(|v| Some(*v)));
        let r = Recurrence {
            body: Box::new(cell.body),
            num_carried: 2,
            num_scanned: 1 + nm,
            num_invariant: np,
            reverse: false,
            has_seq_lens: false,
        };
        let names = ["h", "c", "y"].map(|s| format!("layer{l}.{s}"));
        let res = b
            .node_named(&format!("layer{l}"), Op::Recurrence(r), &ops, &names)
            .map_err(e)?;
        state_out.push((format!("hT.l{l}"), res[0]));
        state_out.push((format!("cT.l{l}"), res[1]));
        (seq, last_h) = (res[2], Some(res[0]));
        p_at += np;
        mask_at += nm;
    }
    let last_h = last_h.expect("at least one layer");
    loss::head(&mut b, cfg, &mut params, seq, last_h, labels).map_err(e)?;
    b.g.outputs.extend(state_out);
    Ok(Model {
        // Inputs first and nodes in order, so the text declares every input in its header.
        graph: compact(&b.g).map_err(e)?,
        params,
        states,
        masks,
    })
}

/// A dropout mask for one mask input: each element is 0 with probability `p`, else 1/(1-p)
/// (inverted dropout, so evaluation feeds ones).
pub fn dropout_mask(rng: &mut Rng, dims: &[usize], p: f32) -> Tensor {
    let n = dims.iter().product();
    let keep = 1.0 - p;
    let data = (0..n)
        .map(|_| {
            if (rng.uniform() as f32) < p {
                0.0
            } else {
                1.0 / keep
            }
        })
        .collect();
    Tensor::from_f32(dims, data).expect("dims match the data")
}
