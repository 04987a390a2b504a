//! `hlstmc.InferenceSession`: ONNX Runtime's session over a built model. One session serves
//! any number of Python threads: the built model (`Runnable`) is shared, and each concurrent
//! call takes a working state from a pool (or makes one), runs without the GIL, and puts it
//! back, so that steady-state calls allocate nothing but their outputs.

use crate::convert::{self, Source, onnx_type_name, shape_list};
use crate::errors::{choose, invalid, to_py};
use hlstmc::{
    BuildOptions, CpuIsa, Engine, Model, OptimizeOptions, Runnable, State, StoredType, Strategy,
    TensorInfo,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::{Arc, Mutex};

/// An input or output of a model: `name`, `shape` (ints for known dims, strings for symbolic
/// ones such as a batch `N`, None for unknown ones) and `type` (`"tensor(float)"`; the
/// declared type for a float the model declares float16, bfloat16 or float64:
/// `"tensor(float16)"`), as ONNX Runtime's `NodeArg`.
#[pyclass(module = "hlstmc", frozen)]
pub struct NodeArg {
    info: TensorInfo,
    /// The float type the model declares (f32 for an f32 or non-float tensor).
    stored: StoredType,
}

#[pymethods]
impl NodeArg {
    /// The name in the model.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    /// The dims: ints where known, the symbol's name (a string) where open, None where not
    /// inferred; None when even the rank is unknown.
    #[getter]
    fn shape(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        shape_list(py, &self.info.ty)
    }

    /// The element type as ONNX Runtime spells it: "tensor(float)", "tensor(int64)", ...;
    /// "tensor(float16)", "tensor(bfloat16)" or "tensor(double)" for a float the model
    /// declares so (computed in float32).
    #[getter(r#type)]
    fn type_(&self) -> &'static str {
        onnx_type_name(self.info.ty.dtype, self.stored)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shape = shape_list(py, &self.info.ty)?;
        Ok(format!(
            "NodeArg(name={:?}, type='{}', shape={})",
            self.info.name,
            onnx_type_name(self.info.ty.dtype, self.stored),
            shape.bind(py).repr()?
        ))
    }
}

/// A model built to run: `InferenceSession(path_or_bytes)`, then `run(None, {name: array})`.
///
/// It takes what ONNX Runtime's session takes (`sess_options`, `providers` and
/// `provider_options` are accepted so that switching is one changed line; of them only
/// `sess_options.intra_op_num_threads` is read, as the thread count when `threads` is not
/// given), and hlstmc's own choices as keywords:
///
/// - `threads`: threads that split each step's work (1 to 64; default 1).
/// - `engine`: "jit" (native code), "interp" (the exact reference interpreter),
///   "fast-interp", "kernel-interp" or "cuda"; default: the JIT where the model compiles, else
///   the interpreter (with a RuntimeWarning saying why).
/// - `optimize`: run the optimizer first (default True; False runs the graph as imported).
/// - `sparse_strategy`: "dense", "sparse-unrolled" or "sparse-csr" for every weight, instead
///   of the choice per matrix.
/// - `cpu`: "native" (default), "x86-64-v3" or "x86-64-v2".
/// - `shapes`: {input name: dims} to fix open dims once; otherwise an open batch or sequence
///   length is fixed per call and each shape's compiled code is kept (8 at most).
#[pyclass(module = "hlstmc", frozen)]
pub struct InferenceSession {
    runnable: Arc<dyn Runnable>,
    /// Working states not in use; a call takes one or makes one.
    idle: Mutex<Vec<Box<dyn State>>>,
    threads: usize,
}

fn names(list: &[TensorInfo]) -> String {
    list.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl InferenceSession {
    fn take_state(&self) -> hlstmc::Result<Box<dyn State>> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.runnable.new_state(),
        }
    }

    fn give_back(&self, state: Box<dyn State>) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state);
    }

    /// The feed as tensors in the model's input order; an unknown or missing name is an
    /// error that lists the model's inputs.
    fn feed(
        &self,
        py: Python<'_>,
        input_feed: &Bound<'_, PyDict>,
    ) -> PyResult<Vec<hlstmc::Tensor>> {
        let infos = self.runnable.inputs();
        let mut got: Vec<Option<hlstmc::Tensor>> = vec![None; infos.len()];
        for (key, value) in input_feed.iter() {
            if !key.is_instance_of::<PyString>() {
                return Err(invalid(format!(
                    "input names are strings, got {}",
                    key.get_type().name()?
                )));
            }
            let name: String = key.extract()?;
            let k = infos.iter().position(|i| i.name == name).ok_or_else(|| {
                invalid(format!(
                    "the model has no input named '{name}'; its inputs are: {}",
                    names(infos)
                ))
            })?;
            let stored = self.runnable.stored_types().input(&name);
            got[k] = Some(convert::to_tensor(py, &infos[k], stored, &value)?);
        }
        let missing: Vec<&str> = infos
            .iter()
            .zip(&got)
            .filter(|(_, t)| t.is_none())
            .map(|(i, _)| i.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!("missing inputs: {}", missing.join(", "))));
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Which outputs to return, by index.
    fn selected(&self, output_names: Option<Vec<String>>) -> PyResult<Vec<usize>> {
        let outs = self.runnable.outputs();
        match output_names {
            None => Ok((0..outs.len()).collect()),
            Some(list) => list
                .iter()
                .map(|n| {
                    outs.iter().position(|o| &o.name == n).ok_or_else(|| {
                        invalid(format!(
                            "the model has no output named '{n}'; its outputs are: {}",
                            names(outs)
                        ))
                    })
                })
                .collect(),
        }
    }
}

/// Builds the model for the engine asked for, or for the JIT falling back to the interpreter
/// where the model does not lower (the CLI's rule); returns the note for the fallback.
fn build(
    model: Model,
    engine: Option<Engine>,
    opts: BuildOptions,
) -> hlstmc::Result<(Arc<dyn Runnable>, Option<String>)> {
    if let Some(e) = engine {
        return Ok((
            model.into_runnable(&BuildOptions { engine: e, ..opts })?,
            None,
        ));
    }
    let (runnable, fallback) = model.into_runnable_or_interp(&opts)?;
    Ok((
        runnable,
        fallback.map(|e| format!("{e}; running the interpreter instead")),
    ))
}

#[pymethods]
impl InferenceSession {
    #[new]
    #[pyo3(signature = (path_or_bytes, sess_options=None, providers=None, provider_options=None, *, threads=None, engine=None, optimize=true, sparse_strategy=None, cpu="native", shapes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path_or_bytes: &Bound<'_, PyAny>,
        sess_options: Option<&Bound<'_, PyAny>>,
        providers: Option<&Bound<'_, PyAny>>,
        provider_options: Option<&Bound<'_, PyAny>>,
        threads: Option<i64>,
        engine: Option<&str>,
        optimize: bool,
        sparse_strategy: Option<&str>,
        cpu: &str,
        shapes: Option<std::collections::BTreeMap<String, Vec<usize>>>,
    ) -> PyResult<Self> {
        // ONNX Runtime's providers choose its devices; hlstmc's engine is `engine`.
        let _ = (providers, provider_options);
        let threads = match (threads, sess_options) {
            (Some(t), _) => t,
            (None, Some(o)) if o.hasattr("intra_op_num_threads")? => {
                let t: i64 = o.getattr("intra_op_num_threads")?.extract()?;
                if t > 0 {
                    t.min(BuildOptions::MAX_THREADS as i64)
                } else {
                    1
                }
            }
            _ => 1,
        };
        if !(1..=BuildOptions::MAX_THREADS as i64).contains(&threads) {
            return Err(invalid(format!(
                "threads = {threads}: a session runs on 1 to {} threads",
                BuildOptions::MAX_THREADS
            )));
        }
        let engine = engine
            .map(|e| choose("engine", e, &Engine::ALL, Engine::name))
            .transpose()?;
        let strategy = sparse_strategy
            .map(|s| choose("sparse_strategy", s, &Strategy::ALL, Strategy::name))
            .transpose()?;
        let cpu: CpuIsa = cpu
            .parse()
            .map_err(|e: String| invalid(format!("cpu: {e}")))?;
        let source = Source::extract(path_or_bytes)?;
        let shapes: Vec<(String, Vec<usize>)> = shapes.unwrap_or_default().into_iter().collect();
        let opts = BuildOptions {
            strategy,
            cpu,
            threads: threads as usize,
            ..BuildOptions::default()
        };
        let built = py.detach(move || -> hlstmc::Result<_> {
            let mut model = source.load()?;
            let warnings = model.warnings().to_vec();
            if !shapes.is_empty() {
                model = model.with_input_shapes(&shapes)?;
            }
            let opt = if optimize {
                OptimizeOptions::default()
            } else {
                OptimizeOptions::none()
            };
            Ok((build(model.optimize(&opt)?, engine, opts)?, warnings))
        });
        let ((runnable, note), warnings) = built.map_err(to_py)?;
        // The import's warnings (an output declared with other dims than it computes), as
        // ONNX Runtime would print them.
        for w in warnings {
            let msg = std::ffi::CString::new(w).unwrap_or_default();
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyUserWarning>(),
                &msg,
                1,
            )?;
        }
        if let Some(note) = note {
            let msg = std::ffi::CString::new(note).unwrap_or_default();
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                &msg,
                1,
            )?;
        }
        Ok(InferenceSession {
            runnable,
            idle: Mutex::new(Vec::new()),
            threads: threads as usize,
        })
    }

    /// Runs the model: `output_names` (None for all) and `input_feed`, a dict from input name
    /// to a numpy array. Returns the outputs as a list of numpy arrays, in the order asked
    /// for. The GIL is released while the model runs; any number of threads may call `run`
    /// on one session at once.
    ///
    /// The model computes in float32. An input declared float16, bfloat16 or float64 takes a
    /// float array of any precision and is rounded to its declared type; a bfloat16 input also
    /// takes a uint16 array of bfloat16 bit patterns (numpy has no bfloat16) or an
    /// ml_dtypes.bfloat16 array. An output declared float16 or float64 comes back as a
    /// float16 or float64 array; one declared bfloat16 as a uint16 array of bit patterns
    /// (`out.view(ml_dtypes.bfloat16)`, or `(out.astype(numpy.uint32) << 16).view(numpy.float32)`).
    #[pyo3(signature = (output_names, input_feed, run_options=None))]
    fn run(
        &self,
        py: Python<'_>,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'_, PyDict>,
        run_options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let _ = run_options;
        let picked = self.selected(output_names)?;
        let inputs = self.feed(py, input_feed)?;
        let outputs = py.detach(|| -> hlstmc::Result<Vec<hlstmc::Tensor>> {
            let mut state = self.take_state()?;
            let mut outputs = Vec::new();
            // A state whose run failed is dropped, not pooled: nothing of a failed call
            // carries into the next.
            state.run_into(&inputs, &mut outputs)?;
            self.give_back(state);
            Ok(outputs)
        });
        let mut outputs: Vec<Option<hlstmc::Tensor>> =
            outputs.map_err(to_py)?.into_iter().map(Some).collect();
        let outs = self.runnable.outputs();
        let stored = self.runnable.stored_types();
        let mut list = Vec::with_capacity(picked.len());
        for (i, &k) in picked.iter().enumerate() {
            // Each output's buffer moves into numpy; one asked for again later is copied.
            let t = if picked[i + 1..].contains(&k) {
                outputs[k].clone()
            } else {
                outputs[k].take()
            };
            if let Some(t) = t {
                list.push(convert::to_numpy(py, t, stored.output(&outs[k].name))?);
            }
        }
        Ok(list)
    }

    /// The model's inputs, as `NodeArg`s.
    fn get_inputs(&self) -> Vec<NodeArg> {
        let stored = self.runnable.stored_types();
        self.runnable
            .inputs()
            .iter()
            .map(|i| NodeArg {
                info: i.clone(),
                stored: stored.input(&i.name),
            })
            .collect()
    }

    /// The model's outputs, as `NodeArg`s.
    fn get_outputs(&self) -> Vec<NodeArg> {
        let stored = self.runnable.stored_types();
        self.runnable
            .outputs()
            .iter()
            .map(|i| NodeArg {
                info: i.clone(),
                stored: stored.output(&i.name),
            })
            .collect()
    }

    /// What runs the model, as ONNX Runtime names its providers: `["hlstmc-jit"]`.
    fn get_providers(&self) -> Vec<String> {
        vec![format!("hlstmc-{}", self.runnable.engine().name())]
    }

    /// The engine that runs the model: "jit", "interp", ...
    #[getter]
    fn engine(&self) -> &'static str {
        self.runnable.engine().name()
    }

    /// Threads each step's work is split across.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    fn __repr__(&self) -> String {
        format!(
            "InferenceSession(engine='{}', threads={}, inputs=[{}], outputs=[{}])",
            self.runnable.engine().name(),
            self.threads,
            names(self.runnable.inputs()),
            names(self.runnable.outputs())
        )
    }
}
