//! `Jit`: training and evaluation graphs lowered to the kernel IR and compiled by Cranelift
//! (`hlstm_backends::cpu`), the engine `hlstmc run` uses for inference. The weights stay graph
//! inputs, so they lower to run-time matmul operands (`Weight::View`) and one compiled program
//! serves the whole run; nothing is recompiled when the weights change.
//!
//! The kernel IR computes in f32 only. The trainer's graphs take integer inputs in one place:
//! class indices (labels, tokens) that only select rows with `gather{axis=0}`, either of an
//! identity (the one-hot of the loss and of the embedding's gradient) or of a weight (the
//! embedding). [`onehot_inputs`] rewrites such an input into an f32 one-hot input with one more
//! axis of the table's row count, which the engine fills from the indices on every run: a
//! gather of an identity becomes the one-hot itself, a gather of anything else a matmul by it.

use super::{Engine, Executable};
use crate::Error;
use crate::gp::Masks;
use hlstm_backends::cpu::JitProgram;
use hlstm_ir::kernel::Program;
use hlstm_ir::{DType, Dim, Graph, Op, Tensor, TensorType, Value, ValueInfo};
use hlstm_passes::lower::LowerOptions;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default)]
pub struct Jit;

/// How the engine feeds graph input k to the program.
#[derive(Clone, Debug)]
enum Feed {
    /// f32 as it is.
    F32,
    /// Integer class indices expanded to a one-hot over `classes` (a last axis).
    OneHot { classes: usize },
}

/// A graph specialized to one set of input shapes and compiled.
struct Compiled {
    jit: JitProgram,
    feeds: Vec<Feed>,
    output_dims: Vec<Vec<usize>>,
    /// Reused between runs: the program's f32 inputs and outputs.
    staged: Vec<Vec<f32>>,
    outs: Vec<Vec<f32>>,
}

/// Most specializations kept per graph (evaluation sees a few: each split's batch, and a text
/// slice's last, shorter window); the oldest is dropped past it.
const MAX_SPECIALIZATIONS: usize = 8;

struct Loaded {
    graph: Graph,
    /// The graph's input names, for errors.
    names: Vec<String>,
    /// Compiled programs by the input shapes they were specialized to, newest last.
    cache: Cache,
    /// The parameters' masks the programs were compiled for ([`Executable::set_masks`]), and
    /// as patterns by graph input: a masked weight at most 30% dense is multiplied by a
    /// compressed kernel over its mask (`Weight::Masked`).
    masks: Masks,
    patterns: Patterns,
}

type Patterns = Vec<Option<Arc<Vec<f32>>>>;

impl Engine for Jit {
    /// Checks the graph; compiles it at once when its input shapes are all known (so a graph
    /// the JIT cannot take fails here), else on the first run with each new set of shapes.
    fn load(&self, g: &Graph) -> Result<Box<dyn Executable>, Error> {
        hlstm_ir::verify::verify(g).map_err(|e| Error::new(format!("graph: {e}")))?;
        let mut loaded = Loaded {
            graph: g.clone(),
            names: g.inputs.iter().map(|&n| g.nodes[n].name.clone()).collect(),
            cache: Vec::new(),
            masks: Vec::new(),
            patterns: Vec::new(),
        };
        let static_dims: Option<Vec<Vec<usize>>> = g
            .inputs
            .iter()
            .map(|&n| g.nodes[n].results[0].ty.concrete())
            .collect();
        if let Some(dims) = static_dims {
            let c = compile(g, &[])?;
            loaded.cache.push((dims, c));
        }
        Ok(Box::new(loaded))
    }
    fn name(&self) -> &'static str {
        "jit"
    }
}

/// Lowers and compiles a graph whose shapes are all known; `patterns` by graph input.
fn compile(g: &Graph, patterns: &[Option<Arc<Vec<f32>>>]) -> Result<Compiled, Error> {
    let output_dims = g
        .outputs
        .iter()
        .map(|(name, v)| {
            g.value_type(*v).concrete().ok_or_else(|| {
                Error::new(format!(
                    "the JIT engine needs static shapes; output '{name}' has type {}",
                    g.value_type(*v)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (program, feeds) = lower(g, patterns)?;
    let jit = hlstm_driver::compile_jit(&program, &hlstm_driver::BuildOptions::default())
        .map_err(|e| Error::new(format!("the JIT engine cannot compile the graph: {e}")))?;
    let steps = jit.max_steps().0;
    let staged = (0..g.inputs.len())
        .map(|k| vec![0.0; jit.input_len(k, steps)])
        .collect();
    let outs = (0..g.outputs.len())
        .map(|k| vec![0.0; jit.output_len(k, steps)])
        .collect();
    Ok(Compiled {
        jit,
        feeds,
        output_dims,
        staged,
        outs,
    })
}

/// The kernel program the JIT engine compiles for a graph with static shapes (for dumps:
/// `hlstm_ir::kernel::print`), and how each input is fed to it.
fn lower(g: &Graph, patterns: &[Option<Arc<Vec<f32>>>]) -> Result<(Program, Vec<Feed>), Error> {
    let mut lowered = g.clone();
    let feeds = onehot_inputs(&mut lowered)?;
    hlstm_passes::dce::dce_graph(&mut lowered);
    let opts = LowerOptions {
        input_patterns: patterns.to_vec(),
        selector: Some(&hlstm_backends::cpu::select::SELECTOR),
        ..Default::default()
    };
    let program = hlstm_passes::lower::lower(&lowered, &opts)
        .map_err(|e| Error::new(format!("the JIT engine cannot lower the graph: {e}")))?;
    Ok((program, feeds))
}

/// The kernel program the JIT engine runs for a graph with static shapes, given the masks of
/// its last inputs (the parameters; empty: none, see [`Executable::set_masks`]): its integer
/// class inputs are one-hot f32 inputs (see the module's comment). For dumps
/// (`hlstm_ir::kernel::print`) and tests.
pub fn kernel_program(g: &Graph, masks: &Masks) -> Result<Program, Error> {
    lower(g, &patterns(g, masks)).map(|(p, _)| p)
}

/// The lowering's patterns, by graph input, of masks of the graph's last inputs.
fn patterns(g: &Graph, masks: &Masks) -> Patterns {
    let first = g.inputs.len().saturating_sub(masks.len());
    let mut p = vec![None; first];
    p.extend(masks.iter().map(|m| {
        m.as_ref()
            .map(|m| Arc::new(m.iter().map(|&on| f32::from(on)).collect()))
    }));
    p
}

/// Compiled programs by the input shapes they were specialized to, newest last.
type Cache = Vec<(Vec<Vec<usize>>, Compiled)>;

/// The program of `g` for these input shapes from `cache`, specialized and compiled on first
/// use.
fn program<'c>(
    g: &Graph,
    cache: &'c mut Cache,
    patterns: &[Option<Arc<Vec<f32>>>],
    inputs: &[Tensor],
) -> Result<&'c mut Compiled, Error> {
    if inputs.len() != g.inputs.len() {
        return Err(Error::new(format!(
            "expected {} inputs, got {}",
            g.inputs.len(),
            inputs.len()
        )));
    }
    let dims: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    if let Some(k) = cache.iter().position(|(d, _)| *d == dims) {
        return Ok(&mut cache[k].1);
    }
    // Bind each symbolic dim to what the inputs give it; known dims must match.
    let mut bound: HashMap<String, usize> = HashMap::new();
    for (&n, (t, d)) in g.inputs.iter().zip(inputs.iter().zip(&dims)) {
        let info = &g.nodes[n].results[0];
        let shape = info.ty.shape.as_deref().unwrap_or(&[]);
        let mismatch = || {
            Error::new(format!(
                "input '{}' has shape {d:?}, expected {}",
                info.name, info.ty
            ))
        };
        if info.ty.shape.is_some() && shape.len() != d.len() || t.dtype() != info.ty.dtype {
            return Err(Error::new(format!(
                "input '{}' is {}{d:?}, expected {}",
                info.name,
                t.dtype(),
                info.ty
            )));
        }
        for (dim, &v) in shape.iter().zip(d) {
            match dim {
                Dim::Known(k) if *k != v => return Err(mismatch()),
                Dim::Sym(s) if *bound.entry(s.clone()).or_insert(v) != v => {
                    return Err(mismatch());
                }
                _ => {}
            }
        }
    }
    let mut specialized = g.clone();
    let shapes: Vec<(String, Vec<usize>)> = g
        .inputs
        .iter()
        .zip(&dims)
        .filter(|(n, _)| g.nodes[**n].results[0].ty.concrete().is_none())
        .map(|(n, d)| (g.nodes[*n].name.clone(), d.clone()))
        .collect();
    hlstm_ir::specialize::bind_input_shapes(&mut specialized, &shapes)
        .map_err(|e| Error::new(format!("the graph specialized to its inputs' shapes: {e}")))?;
    let c = compile(&specialized, patterns)?;
    if cache.len() >= MAX_SPECIALIZATIONS {
        cache.remove(0);
    }
    cache.push((dims, c));
    Ok(&mut cache.last_mut().expect("just pushed").1)
}

impl Executable for Loaded {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        let c = program(&self.graph, &mut self.cache, &self.patterns, inputs)?;
        for (k, t) in inputs.iter().enumerate() {
            let name = &self.names[k];
            let dst = &mut c.staged[k];
            match c.feeds[k] {
                Feed::F32 => {
                    let a = t.as_f32().ok_or_else(|| {
                        Error::new(format!("input '{name}' is {}, expected f32", t.dtype()))
                    })?;
                    for (d, s) in dst.iter_mut().zip(a.iter()) {
                        *d = *s;
                    }
                }
                Feed::OneHot { classes } => {
                    let idx = t.to_i64_vec().ok_or_else(|| {
                        Error::new(format!(
                            "input '{name}' is {}, expected integers",
                            t.dtype()
                        ))
                    })?;
                    dst.fill(0.0);
                    for (row, &i) in idx.iter().enumerate() {
                        if i < 0 || i as usize >= classes {
                            return Err(Error::new(format!(
                                "input '{name}': index {i} at {row} is out of range 0..{classes}"
                            )));
                        }
                        dst[row * classes + i as usize] = 1.0;
                    }
                }
            }
        }
        let ins: Vec<&[f32]> = c.staged.iter().map(|v| v.as_slice()).collect();
        let mut outs: Vec<&mut [f32]> = c.outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        c.jit
            .run(&ins, &mut outs)
            .map_err(|e| Error::new(format!("running the graph: {e}")))?;
        c.outs
            .iter()
            .zip(&c.output_dims)
            .map(|(data, dims)| {
                Tensor::from_f32(dims, data.clone())
                    .ok_or_else(|| Error::new("an output's length does not match its shape"))
            })
            .collect()
    }

    fn set_masks(&mut self, masks: &Masks) {
        if *masks == self.masks {
            return;
        }
        self.patterns = patterns(&self.graph, masks);
        self.masks = masks.clone();
        self.cache.clear();
    }
}

/// Rewrites every integer graph input whose only uses are `gather{axis=0}` row selections from
/// tables with a known row count into an f32 one-hot input (see the module's comment). Returns
/// how to feed each input. An integer input used any other way is an error naming it and a use.
fn onehot_inputs(g: &mut Graph) -> Result<Vec<Feed>, Error> {
    let mut feeds = Vec::new();
    for n in g.inputs.clone() {
        let ty = g.nodes[n].results[0].ty.clone();
        if ty.dtype == DType::F32 {
            feeds.push(Feed::F32);
            continue;
        }
        let name = g.nodes[n].name.clone();
        let dims = ty.concrete().ok_or_else(|| {
            Error::new(format!(
                "the JIT engine needs static shapes; input '{name}' has type {ty}"
            ))
        })?;
        let mut classes = None;
        let users = g.users(n);
        for (u, port) in &users {
            let node = &g.nodes[*u];
            let table_rows = match (&node.op, port.in_slot) {
                (Op::Gather { axis: 0 }, 1) => g.operands(*u)[0]
                    .and_then(|t| g.value_type(t).concrete())
                    .and_then(|d| d.first().copied()),
                _ => None,
            };
            let Some(rows) = table_rows else {
                return Err(Error::new(format!(
                    "the JIT engine takes integer input '{name}' only as row indices of \
                     gather{{axis=0}}; node '{}' ({}) uses it otherwise",
                    node.name,
                    node.op.kind()
                )));
            };
            if classes.is_some_and(|c| c != rows) {
                return Err(Error::new(format!(
                    "integer input '{name}' indexes tables of {} and {rows} rows",
                    classes.unwrap_or(0)
                )));
            }
            classes = Some(rows);
        }
        let Some(classes) = classes else {
            return Err(Error::new(format!(
                "integer input '{name}' is not used; the JIT engine has no f32 form for it"
            )));
        };
        let mut onehot_dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
        onehot_dims.push(Dim::Known(classes));
        g.nodes[n].results[0].ty = TensorType::new(DType::F32, onehot_dims.clone());
        let onehot = Value { node: n, slot: 0 };
        for (u, _) in users {
            let table = g.operands(u)[0].expect("gather has a table");
            let result = Value { node: u, slot: 0 };
            let replacement = if is_identity(g, table, classes) {
                onehot
            } else {
                let info = g.nodes[u].results[0].clone();
                let mm = g.add_node(
                    &format!("{}.onehot_mm", g.nodes[u].name),
                    Op::MatMul,
                    &[Some(onehot), Some(table)],
                    vec![ValueInfo {
                        name: format!("{}.onehot_mm", info.name),
                        ty: info.ty,
                    }],
                );
                Value { node: mm, slot: 0 }
            };
            g.replace_uses(result, replacement);
            g.nodes.remove_node(u);
        }
        feeds.push(Feed::OneHot { classes });
    }
    Ok(feeds)
}

/// Whether `v` is the constant identity matrix of order `n`.
fn is_identity(g: &Graph, v: Value, n: usize) -> bool {
    let Some(c) = g.constant(v) else {
        return false;
    };
    let Some(a) = c.value.as_f32() else {
        return false;
    };
    a.shape() == [n, n]
        && a.indexed_iter()
            .all(|(ix, &x)| x == if ix[0] == ix[1] { 1.0 } else { 0.0 })
}
