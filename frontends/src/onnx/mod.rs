//! ONNX import: a registry maps each op type to an importer function (one file per op family
//! under `ops/`); nodes are added in file order, constants folded as they appear. `export`
//! writes the IR back as ONNX.

pub mod ctx;
pub mod export;
pub mod ops;
pub mod outputs;
mod shape_values;
pub mod tensor;

use ctx::Ctx;
use hlstm_ir::{Dim, Graph, StoredType, TensorType};
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use protobuf::Message;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 25;

#[derive(Debug)]
pub enum ImportError {
    Io {
        path: PathBuf,
        err: std::io::Error,
    },
    /// The bytes are not a valid ONNX model.
    Decode(String),
    /// Op types with no importer: (op type, first node using it).
    Unsupported(Vec<(String, String)>),
    /// A node could not be imported.
    Node {
        node: String,
        op: String,
        msg: String,
    },
    /// A problem with the model as a whole (opset, inputs, outputs, initializers).
    Model(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Io { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            ImportError::Decode(m) => write!(f, "not a valid ONNX model: {m}"),
            ImportError::Unsupported(list) => {
                write!(f, "unsupported op types:")?;
                for (op, node) in list {
                    write!(f, "\n  {op} (first used by node '{node}')")?;
                }
                Ok(())
            }
            ImportError::Node { node, op, msg } => write!(f, "node '{node}' ({op}): {msg}"),
            ImportError::Model(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Reads and imports an ONNX model file.
pub fn import_file(path: &Path) -> Result<Graph, ImportError> {
    import_bytes(&read_model_file(path)?, path.parent())
}

/// Reads a model file within the `bytes` limit ([`hlstm_ir::limits`]); bytes that cannot
/// begin a protobuf message (`/dev/zero`, a text file) are refused after the first 64 KiB,
/// not after the whole limit.
pub fn read_model_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    hlstm_ir::limits::read_file(path, check_model_head).map_err(|err| {
        if err.kind() == std::io::ErrorKind::InvalidData {
            ImportError::Decode(err.to_string())
        } else {
            ImportError::Io {
                path: path.to_path_buf(),
                err,
            }
        }
    })
}

/// Whether `head` can start a serialized ModelProto: its first byte must be a protobuf field
/// tag (a field number of at least 1 and a wire type protobuf still uses).
pub fn check_model_head(head: &[u8]) -> Result<(), String> {
    let Some(&first) = head.first() else {
        return Ok(());
    };
    let (field, wire) = (first >> 3, first & 7);
    if field == 0 || !matches!(wire, 0 | 1 | 2 | 5) {
        return Err(format!(
            "it starts with byte {first:#04x}, which cannot begin a protobuf message"
        ));
    }
    Ok(())
}

/// Models decoded by [`import_bytes`] in this process: tests use it to show that a pipeline
/// reads a file once (shapes are fixed inside the IR, never by importing again).
pub fn models_decoded() -> usize {
    MODELS_DECODED.load(std::sync::atomic::Ordering::Relaxed)
}

static MODELS_DECODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Imports a serialized ONNX model; `model_dir` is where external data files live.
pub fn import_bytes(bytes: &[u8], model_dir: Option<&Path>) -> Result<Graph, ImportError> {
    Ok(import_bytes_with_warnings(bytes, model_dir)?.0)
}

/// [`import_bytes`], with the warnings about the model (an output declared with other dims
/// than it computes), one sentence each.
pub fn import_bytes_with_warnings(
    bytes: &[u8],
    model_dir: Option<&Path>,
) -> Result<(Graph, Vec<String>), ImportError> {
    import_parsed_with_warnings(parse_model_bytes(bytes)?, model_dir)
}

/// The decoded model [`parse_model_bytes`] gives, for callers that read more of it than the
/// graph (its metadata) before importing it.
pub use onnx_protobuf::ModelProto as ParsedModel;

/// The first half of [`import_bytes`]: the protobuf decoded (every initializer's bytes are
/// copied out of `bytes`, which the caller may drop before [`import_parsed_with_warnings`]).
pub fn parse_model_bytes(bytes: &[u8]) -> Result<ModelProto, ImportError> {
    MODELS_DECODED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hlstm_ir::timing::phase("import/parse protobuf", || {
        ModelProto::parse_from_bytes(bytes).map_err(|e| ImportError::Decode(e.to_string()))
    })
}

/// The second half of [`import_bytes`]: a parsed model imported, each top-level initializer's
/// bytes freed as soon as it is decoded (a model's weights are held twice at most one
/// initializer at a time).
pub fn import_parsed_with_warnings(
    mut model: ModelProto,
    model_dir: Option<&Path>,
) -> Result<(Graph, Vec<String>), ImportError> {
    let inits = model
        .graph
        .as_mut()
        .map(|g| std::mem::take(&mut g.initializer));
    hlstm_ir::timing::phase("import/graph", || {
        import_model_inner(&model, inits, model_dir)
    })
}

pub fn opset_of(model: &ModelProto) -> Result<i64, ImportError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| ImportError::Decode("the model imports no default-domain opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Model(format!(
            "opset {opset} is not supported (hlstmc reads opsets {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    Ok(opset)
}

pub fn import_model(model: &ModelProto, model_dir: Option<&Path>) -> Result<Graph, ImportError> {
    Ok(import_model_with_warnings(model, model_dir)?.0)
}

/// [`import_model`], with its warnings.
pub fn import_model_with_warnings(
    model: &ModelProto,
    model_dir: Option<&Path>,
) -> Result<(Graph, Vec<String>), ImportError> {
    import_model_inner(model, None, model_dir)
}

/// [`import_model_with_warnings`]; `inits`, when given, are the top-level graph's initializers
/// taken out of `model` (decoded and dropped one by one).
fn import_model_inner(
    model: &ModelProto,
    inits: Option<Vec<TensorProto>>,
    model_dir: Option<&Path>,
) -> Result<(Graph, Vec<String>), ImportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode("the model has no graph".into()))?;
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(ImportError::Decode("the model's graph is empty".into()));
    }
    let opset = opset_of(model)?;
    check_supported(graph)?;
    let mut ctx = Ctx::new(opset, model_dir, None);
    import_graph_with(&mut ctx, graph, &[], inits)?;
    hlstm_ir::timing::phase("import/graph/verify", || hlstm_ir::verify::verify(&ctx.g))
        .map_err(|m| ImportError::Model(format!("the imported graph is ill-formed: {m}")))?;
    Ok((ctx.g, ctx.warnings))
}

/// Every op type without an importer, with its first node, in all graphs and bodies.
fn check_supported(graph: &GraphProto) -> Result<(), ImportError> {
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    fn walk(g: &GraphProto, missing: &mut BTreeMap<String, String>) {
        for n in &g.node {
            if ops::lookup_in(&n.domain, &n.op_type).is_none() {
                missing
                    .entry(unsupported_op_text(n))
                    .or_insert_with(|| node_label(n));
            }
            for a in &n.attribute {
                if let Some(b) = a.g.as_ref() {
                    walk(b, missing);
                }
                for b in &a.graphs {
                    walk(b, missing);
                }
            }
        }
    }
    walk(graph, &mut missing);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Unsupported(missing.into_iter().collect()))
    }
}

/// An op without an importer as the error lists it: its type, then (outside the default
/// domain) its domain and, for contrib ops hlstmc refuses on purpose, why.
fn unsupported_op_text(n: &NodeProto) -> String {
    if n.domain.is_empty() || n.domain == "ai.onnx" {
        return n.op_type.clone();
    }
    match ops::contrib::refusal(&n.domain, &n.op_type) {
        Some(why) => format!("{} (domain '{}': {why})", n.op_type, n.domain),
        None => format!("{} (domain '{}')", n.op_type, n.domain),
    }
}

/// A node's name, or its first output when it has none.
pub fn node_label(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        format!(
            "<{}:{}>",
            n.op_type,
            n.output.first().map(String::as_str).unwrap_or("")
        )
    }
}

/// The float type a declared ONNX value is stored in (f32 for every other type): float16,
/// bfloat16 and float64 inputs and outputs are converted at the run's boundary.
pub fn value_stored(vi: &ValueInfoProto) -> StoredType {
    match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx_protobuf::type_proto::Value::TensorType(t)) => tensor::stored_of(t.elem_type),
        _ => StoredType::F32,
    }
}

/// The IR type of a declared ONNX value (float16, bfloat16 and float64 are computed as f32;
/// [`value_stored`] keeps the declared type).
pub fn value_type(vi: &ValueInfoProto) -> Result<TensorType, String> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
    let tt = match vi.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx_protobuf::type_proto::Value::TensorType(t)) => t,
        Some(_) => {
            return Err(format!(
                "'{}' is not a tensor (sequences, maps and optionals are not supported)",
                vi.name
            ));
        }
        None => return Err(format!("'{}' has no type", vi.name)),
    };
    let dtype = tensor::dtype_of(tt.elem_type).map_err(|e| format!("'{}': {e}", vi.name))?;
    let shape = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                Some(D::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    Ok(TensorType { dtype, shape })
}

/// Whether a declared type cannot hold a value of type `given`: another rank, or two known
/// dims that differ.
fn contradicts(declared: &TensorType, given: &TensorType) -> bool {
    match (&declared.shape, &given.shape) {
        (Some(a), Some(b)) => {
            a.len() != b.len()
                || a.iter()
                    .zip(b)
                    .any(|(x, y)| matches!((x.known(), y.known()), (Some(p), Some(q)) if p != q))
        }
        _ => false,
    }
}

/// Imports a graph's initializers, inputs and nodes into `ctx`; for a body, `formal` gives the
/// types of its formal inputs where the body leaves them undeclared. Returns nothing: the graph's
/// outputs are added to `ctx.g.outputs`.
pub fn import_graph(
    ctx: &mut Ctx,
    graph: &GraphProto,
    formal: &[TensorType],
) -> Result<(), ImportError> {
    import_graph_with(ctx, graph, formal, None)
}

/// [`import_graph`]; `owned`, when given, holds the graph's initializers (taken out of it):
/// each is dropped once decoded.
fn import_graph_with(
    ctx: &mut Ctx,
    graph: &GraphProto,
    formal: &[TensorType],
    owned: Option<Vec<TensorProto>>,
) -> Result<(), ImportError> {
    let mut initialized = std::collections::HashSet::new();
    let inits: Box<dyn Iterator<Item = std::borrow::Cow<TensorProto>>> = match owned {
        Some(v) => Box::new(v.into_iter().map(std::borrow::Cow::Owned)),
        None => Box::new(graph.initializer.iter().map(std::borrow::Cow::Borrowed)),
    };
    for init in inits {
        // ONNX Runtime takes the first of two initializers of one name, and hlstmc took the
        // last: the outputs differed. onnx.checker rejects the model; so does hlstmc.
        if initialized.contains(&init.name) {
            return Err(ImportError::Model(format!(
                "two initializers are named '{}'",
                init.name
            )));
        }
        let t = hlstm_ir::timing::phase("import/graph/initializers", || {
            tensor::decode(&init, ctx.model_dir)
        })
        .map_err(|m| ImportError::Model(format!("initializer '{}': {m}", init.name)))?;
        let v = ctx.constant(&init.name, t);
        ctx.g
            .stored
            .set_weight(&init.name, tensor::stored_of(init.data_type));
        ctx.bind(&init.name, v);
        initialized.insert(init.name.clone());
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(ImportError::Model(
            "sparse initializers are not supported".into(),
        ));
    }
    // onnx.checker's single static assignment rule: a name is a graph input once (ONNX
    // Runtime refuses a second definition too; a name listed twice as an output is allowed by
    // both).
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = graph.input.iter().find(|v| !seen.insert(v.name.as_str())) {
        return Err(ImportError::Model(format!(
            "graph input '{}' is listed twice (ONNX graphs are in single static assignment \
             form: each name is defined once)",
            dup.name
        )));
    }
    let mut k = 0;
    for inp in &graph.input {
        if initialized.contains(&inp.name) {
            continue;
        }
        let declared =
            value_type(inp).map_err(|m| ImportError::Model(format!("graph input {m}")))?;
        let ty = match (declared.shape.is_some(), formal.get(k)) {
            (false, Some(f)) => TensorType {
                dtype: declared.dtype,
                shape: f.shape.clone(),
            },
            (true, Some(f)) if contradicts(&declared, f) => {
                // The interpreter runs on what the loop passes and the lowering on the
                // declaration: both must hold (a body input declared [2^62,32] for a [1,32]
                // state overflowed the lowering, found by the fuzzer).
                return Err(ImportError::Model(format!(
                    "body input '{}' is declared {declared} but receives {f}",
                    inp.name
                )));
            }
            _ => declared,
        };
        k += 1;
        ctx.g.stored.set_input(&inp.name, value_stored(inp));
        let v = ctx.g.add_input(&inp.name, ty);
        ctx.bind(&inp.name, v);
    }
    ctx.last_read = last_reads(graph);
    for (at, node) in graph.node.iter().enumerate() {
        ctx.node_at = at;
        import_node(ctx, node)?;
        ctx.free_unread_consts();
    }
    for out in &graph.output {
        let v = ctx.lookup(&out.name).ok_or_else(|| {
            ImportError::Model(format!(
                "graph output '{}' is not produced by any node",
                out.name
            ))
        })?;
        // A declaration that contradicts the computed type: an error (another element type
        // or rank) or, in the main graph, a warning (outputs.rs).
        if let Ok(declared) = value_type(out)
            && let Some(w) = outputs::check(&ctx.g, &out.name, &declared, v)?
            && ctx.outer.is_none()
        {
            ctx.warnings.push(w);
        }
        ctx.g.stored.set_output(&out.name, value_stored(out));
        ctx.g.outputs.push((out.name.clone(), v));
    }
    remove_dead(&mut ctx.g);
    Ok(())
}

/// For each name a node of `graph` reads (an input, or any name a node of its bodies reads,
/// which may be captured from here), the position of the last such node; `usize::MAX` for the
/// graph's outputs, which are read after every node.
fn last_reads(graph: &GraphProto) -> ctx::LastReads {
    fn reads(g: &GraphProto, out: &mut Vec<String>) {
        for n in &g.node {
            out.extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
            for a in &n.attribute {
                for b in a.g.as_ref().into_iter().chain(&a.graphs) {
                    reads(b, out);
                }
            }
        }
    }
    let mut last = HashMap::new();
    for (at, node) in graph.node.iter().enumerate() {
        let mut names: Vec<String> = node
            .input
            .iter()
            .filter(|i| !i.is_empty())
            .cloned()
            .collect();
        for a in &node.attribute {
            for b in a.g.as_ref().into_iter().chain(&a.graphs) {
                reads(b, &mut names);
            }
        }
        for n in names {
            last.insert(n, at);
        }
    }
    for out in &graph.output {
        last.insert(out.name.clone(), usize::MAX);
    }
    let mut by_node = vec![Vec::new(); graph.node.len()];
    for (name, &at) in &last {
        if let Some(names) = by_node.get_mut(at) {
            names.push(name.clone());
        }
    }
    ctx::LastReads { at: last, by_node }
}

/// Removes nodes whose results nobody reads (left behind by folding at import), except inputs.
fn remove_dead(g: &mut Graph) {
    loop {
        let outputs: std::collections::HashSet<_> = g.outputs.iter().map(|(_, v)| v.node).collect();
        let dead: Vec<_> = g
            .nodes
            .node_indices()
            .filter(|&n| {
                !matches!(g.nodes[n].op, hlstm_ir::Op::Input)
                    && !outputs.contains(&n)
                    && g.nodes
                        .neighbors_directed(n, petgraph::Direction::Outgoing)
                        .next()
                        .is_none()
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        for n in dead {
            g.nodes.remove_node(n);
        }
    }
}

/// Records `stored` for every constant of `g` and its bodies that has no stored type yet.
fn mark_body_weights(g: &mut Graph, stored: StoredType) {
    let names: Vec<String> = g
        .nodes
        .node_weights()
        .filter_map(|n| match &n.op {
            hlstm_ir::Op::Const(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    for name in names {
        if g.stored.weight(&name) == StoredType::F32 {
            g.stored.set_weight(&name, stored);
        }
    }
    for n in g.nodes.node_weights_mut() {
        if let hlstm_ir::Op::Recurrence(r) = &mut n.op {
            mark_body_weights(&mut r.body, stored);
        }
    }
}

/// The stored type of a weight, here or in an enclosing graph (a body copies outer constants
/// in under their names).
fn weight_stored(ctx: &Ctx, name: &str) -> StoredType {
    let mut c = Some(ctx);
    while let Some(x) = c {
        let t = x.g.stored.weight(name);
        if t != StoredType::F32 {
            return t;
        }
        c = x.outer;
    }
    StoredType::F32
}

/// The least precise non-f32 stored type among a node's constant operands (or of a Constant
/// node's tensor); f32 when they are all f32.
fn operands_stored(
    ctx: &Ctx,
    node: &NodeProto,
    operands: &[Option<hlstm_ir::Value>],
) -> StoredType {
    let pick = |a: StoredType, b: StoredType| match (a, b) {
        (StoredType::F32, t) | (t, StoredType::F32) => t,
        (a, b) => a.narrowest(b),
    };
    let mut t = StoredType::F32;
    if node.op_type == "Constant" {
        for a in &node.attribute {
            if let Some(v) = a.t.as_ref() {
                t = pick(t, tensor::stored_of(v.data_type));
            }
        }
    }
    for v in operands.iter().flatten() {
        if let Some(c) = ctx.g.constant(*v) {
            t = pick(t, weight_stored(ctx, &c.name));
        }
    }
    t
}

fn import_node(ctx: &mut Ctx, node: &NodeProto) -> Result<(), ImportError> {
    let label = node_label(node);
    let err = |msg: String| ImportError::Node {
        node: label.clone(),
        op: node.op_type.clone(),
        msg,
    };
    let f = ops::lookup_in(&node.domain, &node.op_type)
        .ok_or_else(|| err(format!("unsupported op (domain '{}')", node.domain)))?;
    let mut operands = Vec::with_capacity(node.input.len());
    for name in &node.input {
        if name.is_empty() {
            operands.push(None);
        } else {
            let v = ctx.lookup(name).ok_or_else(|| err(format!("input '{name}' is not defined (no initializer, graph input or earlier node makes it)")))?;
            operands.push(Some(v));
        }
    }
    let stored = operands_stored(ctx, node, &operands);
    let before: Option<std::collections::HashSet<_>> =
        (stored != StoredType::F32).then(|| ctx.g.nodes.node_indices().collect());
    let results = f(ctx, node, &label, &operands).map_err(err)?;
    if let Some(before) = before {
        // Weights this node derived from f16, bf16 or f64 ones (transposed, split, stacked
        // at import) keep their stored type, which `inspect` shows.
        let made: Vec<String> = ctx
            .g
            .nodes
            .node_indices()
            .filter(|n| !before.contains(n))
            .filter_map(|n| match &ctx.g.nodes[n].op {
                hlstm_ir::Op::Const(c) => Some(c.name.clone()),
                _ => None,
            })
            .collect();
        for name in made {
            ctx.g.stored.set_weight(&name, stored);
        }
        // An LSTM, GRU or RNN builds its gate weights inside the recurrence body it makes.
        let new: Vec<_> = ctx
            .g
            .nodes
            .node_indices()
            .filter(|n| !before.contains(n))
            .collect();
        for n in new {
            if let hlstm_ir::Op::Recurrence(r) = &mut ctx.g.nodes[n].op {
                mark_body_weights(&mut r.body, stored);
            }
        }
    }
    for (name, v) in node.output.iter().zip(results) {
        if !name.is_empty() && ctx.bind(name, v).is_some() {
            // Values are assigned once (SSA); a second assignment silently replaced the first.
            return Err(err(format!(
                "output '{name}' is already defined by an initializer, a graph input or an earlier node"
            )));
        }
    }
    Ok(())
}
