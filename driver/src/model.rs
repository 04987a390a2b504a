//! [`Model`]: a graph on its way through the pipeline. Each stage is a method that consumes
//! the model and returns the next form, in the style of tract's
//! `model_for_path(p)?.into_optimized()?.into_runnable()?`.

use crate::runtime::{Runnable, TensorInfo};
use crate::target::BuildOptions;
use crate::{Error, OptimizeOptions, Result};
use hlstm_frontends::onnx::ImportError;
use hlstm_ir::kernel::Program;
use hlstm_ir::{Graph, Tensor};
use hlstm_passes::PipelineLog;
use hlstm_passes::lower::LowerOptions;
use std::path::Path;
use std::sync::Arc;

/// A model in the graph IR: imported once from ONNX, then specialized, optimized and built
/// without going back to the file.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Graph,
    /// What the importer warned about (an output declared with other dims than it computes).
    warnings: Vec<String>,
}

impl Model {
    /// Reads and imports an ONNX file (external data is looked up beside it). The file is
    /// read once; nothing later reads it again.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let read = || hlstm_frontends::onnx::read_model_file(path);
        let bytes = hlstm_ir::timing::phase("import/read file", read).map_err(|e| match e {
            ImportError::Io { path, err } => Error::Io {
                action: "read",
                path,
                source: err,
            },
            other => other.into(),
        })?;
        // A bare file name's parent is "", which is no folder to open: it is ".".
        let dir = path.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
        // The file's bytes are dropped once parsed: the weights are not held three times.
        let parsed = hlstm_frontends::onnx::parse_model_bytes(&bytes)?;
        drop(bytes);
        Model::from_parsed(parsed, dir)
    }

    /// Imports an ONNX model already decoded (`hlstm_frontends::onnx::parse_model_bytes`), for
    /// a caller that reads more of it than the graph; `model_dir` is where its external data
    /// files are.
    pub fn from_parsed(
        parsed: hlstm_frontends::onnx::ParsedModel,
        model_dir: Option<&Path>,
    ) -> Result<Model> {
        let (graph, warnings) =
            hlstm_frontends::onnx::import_parsed_with_warnings(parsed, model_dir)?;
        Ok(Model { graph, warnings })
    }

    /// Imports a serialized ONNX model; `model_dir` is where its external data files are.
    pub fn from_bytes(bytes: &[u8], model_dir: Option<&Path>) -> Result<Model> {
        let (graph, warnings) =
            hlstm_frontends::onnx::import_bytes_with_warnings(bytes, model_dir)?;
        Ok(Model { graph, warnings })
    }

    /// A model of a graph and its import's warnings, as they were (no check).
    pub(crate) fn from_parts(graph: Graph, warnings: Vec<String>) -> Model {
        Model { graph, warnings }
    }

    /// A model from a graph built in memory (the trainer's, or a parsed `.hir`); it is
    /// checked by the verifier.
    pub fn from_graph(graph: Graph) -> Result<Model> {
        hlstm_ir::verify::verify(&graph).map_err(Error::Optimize)?;
        Ok(Model {
            graph,
            warnings: Vec::new(),
        })
    }

    /// Warnings about the model found at import, one sentence each, without a `warning:`
    /// prefix: an output whose declared dims differ from those it computes (ONNX Runtime runs
    /// such a model and warns too). The CLI prints them to standard error.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The graph IR.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph IR, taken out.
    pub fn into_graph(self) -> Graph {
        self.graph
    }

    /// The graph inputs: names, element types and shapes (symbolic dims by name).
    pub fn inputs(&self) -> Vec<TensorInfo> {
        TensorInfo::inputs_of(&self.graph)
    }

    /// The graph outputs.
    pub fn outputs(&self) -> Vec<TensorInfo> {
        TensorInfo::outputs_of(&self.graph)
    }

    /// Whether every input's shape is known: the kernel engines compile such a model once.
    pub fn has_static_inputs(&self) -> bool {
        self.inputs().iter().all(|i| i.ty.concrete().is_some())
    }

    /// Fixes input shapes by name (every dim of each listed input): symbolic dims take the
    /// given values everywhere, types are inferred again and shape arithmetic folds, inside
    /// the IR. A name that is not an input, a rank or a known dim that differs, or a symbol
    /// given two values is an error.
    pub fn with_input_shapes(mut self, shapes: &[(String, Vec<usize>)]) -> Result<Model> {
        hlstm_ir::specialize::bind_input_shapes(&mut self.graph, shapes).map_err(Error::Shape)?;
        Ok(self)
    }

    /// Fixes the open dims of the inputs to those of `inputs` (in the model's input order);
    /// unchanged when every input shape is known already, or the count differs (the engines
    /// then report the wrong input).
    pub fn specialize_to(self, inputs: &[Tensor]) -> Result<Model> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        self.specialize_to_shapes(&shapes)
    }

    /// [`Model::specialize_to`] given the shapes alone.
    pub fn specialize_to_shapes(self, dims: &[Vec<usize>]) -> Result<Model> {
        let g = &self.graph;
        if dims.len() != g.inputs.len() {
            return Ok(self);
        }
        let open: Vec<(String, Vec<usize>)> = g
            .inputs
            .iter()
            .zip(dims)
            .filter(|(n, _)| g.nodes[**n].results[0].ty.concrete().is_none())
            .map(|(n, d)| (g.nodes[*n].name.clone(), d.clone()))
            .collect();
        if open.is_empty() {
            return Ok(self);
        }
        self.with_input_shapes(&open)
    }

    /// Runs the optimizer ([`OptimizeOptions`]); instrumentation text goes to standard error.
    pub fn optimize(mut self, opts: &OptimizeOptions) -> Result<Model> {
        self.optimize_logged(opts, &mut std::io::stderr())?;
        Ok(self)
    }

    /// Runs the optimizer in place, writing instrumentation text to `log`; returns what each
    /// pass did.
    pub fn optimize_logged(
        &mut self,
        opts: &OptimizeOptions,
        log: &mut dyn std::io::Write,
    ) -> Result<PipelineLog> {
        let pm = opts.pass_manager()?;
        pm.run(&mut self.graph, log).map_err(Error::Optimize)
    }

    /// The model as a serialized ONNX model (opset 17; a recurrence becomes a `Scan`), with
    /// `producer` as its producer name. An error names what has no ONNX form (a reversed
    /// sequence of a bidirectional recurrence, an activation ONNX lacks).
    pub fn to_onnx(&self, producer: &str) -> Result<Vec<u8>> {
        use protobuf::Message;
        let proto = hlstm_frontends::onnx::export::export(&self.graph, producer)
            .map_err(|e| Error::Unsupported(format!("cannot write the model as ONNX: {e}")))?;
        proto
            .write_to_bytes()
            .map_err(|e| Error::Run(format!("cannot serialize the ONNX model: {e}")))
    }

    /// Lowers the model to the kernel IR, choosing each weight's kernel with the target's
    /// selection (or the one `opts` forces). Input shapes must be static.
    pub fn lower(&self, opts: &LowerOptions) -> Result<Program> {
        hlstm_passes::lower::lower(&self.graph, opts).map_err(Error::Lower)
    }

    /// Builds the model for an engine: the reference interpreter, the kernel interpreter, the
    /// JIT or the CUDA runner. The result is shared by any number of threads, each running it
    /// in a state of its own ([`Runnable::new_state`]).
    pub fn into_runnable(self, opts: &BuildOptions) -> Result<Arc<dyn Runnable>> {
        let stored = self.graph.stored.clone();
        Ok(crate::precision::declared(
            crate::engines::build(self, opts)?,
            &stored,
        ))
    }

    /// The float16, bfloat16 or float64 type each input, output and weight has in the file
    /// (empty for an all-f32 model); the graph computes in f32 (docs/precision.md).
    pub fn stored_types(&self) -> &hlstm_ir::StoredTypes {
        &self.graph.stored
    }

    /// The default engine of `hlstmc run` and the Python session: the JIT (`opts` with its
    /// engine set to it), or, where the model does not lower to the kernel IR yet, the
    /// reference interpreter. Returns the lowering error that made it fall back, for a note.
    pub fn into_runnable_or_interp(
        self,
        opts: &BuildOptions,
    ) -> Result<(Arc<dyn Runnable>, Option<Error>)> {
        let with = |engine| BuildOptions {
            engine,
            ..opts.clone()
        };
        let jit = with(crate::Engine::Jit);
        if jit.threads == 0 || jit.threads > BuildOptions::MAX_THREADS {
            // The error of an invalid thread count, as the engines give it.
            return Ok((self.into_runnable(&jit)?, None));
        }
        let stored = self.graph.stored.clone();
        // The model is given back where it does not lower: it is not copied for the fallback.
        match crate::engines::kernel::KernelRunnable::new_or_back(self, &jit) {
            Ok(r) => Ok((crate::precision::declared(Arc::new(r), &stored), None)),
            Err((e @ Error::Lower(_), Some(model))) => {
                Ok((model.into_runnable(&with(crate::Engine::Interp))?, Some(e)))
            }
            Err((e, _)) => Err(e),
        }
    }
}
