//! The lowering to the kernel IR, checked by running the kernel-IR interpreter:
//!
//! - every fixture model (tests/fixtures/models and extra) after the default pipeline, with the
//!   default strategy choice and with each strategy forced, against the reference outputs;
//! - the recurrent ONNX node tests (LSTM, GRU, RNN, Scan; their weights are run-time inputs);
//! - the multiply-adds on weights left in the kernel IR equal `macs_per_step_nonzero` for the
//!   H64 fixtures (no multiply-add on a zero weight survives);
//! - hand-written graphs for the layouts and the loop cases the fixtures do not reach, against
//!   the graph interpreter, and the error messages for what the kernel IR does not support.

use hlstm_frontends::onnx::{import_file, tensor::read_pb};
use hlstm_ir::kernel::KernelSelector;
use hlstm_ir::kernel::{Program, Stmt, Strategy, Weight, interp};
use hlstm_ir::text::parse;
use hlstm_ir::{Graph, Tensor};
use hlstm_passes::lower::{LowerOptions, NO_TARGET, lower};
use hlstm_passes::verify_each::random_inputs;
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};
use std::path::{Path, PathBuf};

const STRATEGIES: [Option<Strategy>; 4] = [
    None,
    Some(Strategy::Dense),
    Some(Strategy::SparseUnrolled),
    Some(Strategy::SparseCsr),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn optimize(g: &mut Graph) {
    let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).expect("pipeline");
    pm.run(g, &mut std::io::sink())
        .expect("the default pipeline runs");
}

fn read_set(dir: &Path, prefix: &str) -> Vec<Tensor> {
    let mut out = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("test_data_set_0/{prefix}_{k}.pb"));
        if !p.exists() {
            break;
        }
        out.push(read_pb(&p).expect("a readable tensor").1);
    }
    out
}

fn flat_f32(t: &Tensor) -> Result<Vec<f32>, String> {
    t.as_f32()
        .map(|a| a.iter().copied().collect())
        .ok_or_else(|| format!("a {} tensor: the kernel IR takes f32 only", t.dtype()))
}

/// A program's inputs as f32 (integer sequence lengths as whole numbers).
fn flat_inputs(p: &Program, inputs: &[Tensor]) -> Result<Vec<Vec<f32>>, String> {
    inputs
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if p.seq_lens_input() == Some(k) {
                flat_f32(&t.cast(hlstm_ir::DType::F32))
            } else {
                flat_f32(t)
            }
        })
        .collect()
}

/// The layouts docs/kernels.md promises the code generators.
fn check_guarantees(p: &Program, body: &[Stmt], in_loop: bool) -> Result<(), String> {
    use hlstm_ir::kernel::{BufKind, Storage, View};
    let written = |v: &View| -> Result<(), String> {
        match v.storage {
            Storage::Buf(b) if !matches!(p.buffers[b.0].kind, BufKind::Input(_)) => {}
            _ => return Err(format!("a write to an input or a constant: {v:?}")),
        }
        if v.dims
            .iter()
            .zip(&v.strides)
            .any(|(d, s)| *d > 1 && *s == 0)
        {
            return Err(format!("a write through a broadcast view: {v:?}"));
        }
        Ok(())
    };
    for st in body {
        let mut views: Vec<&View> = Vec::new();
        let out = match st {
            Stmt::MatMul { out, a, w, .. } => {
                views.push(a);
                if a.dims.len() != 2 || out.dims.len() != 2 {
                    return Err(format!("a matmul of rank != 2: {st:?}"));
                }
                let k = a.dims[1];
                let m = a.dims[0];
                // Rows innermost (a sparse constant weight over 4 rows or more): `a` is
                // [M, K] with strides [1, M], `out` has a row stride of 1.
                let vectors = m >= 4
                    && matches!(
                        w,
                        Weight::Const(_, Strategy::SparseUnrolled | Strategy::SparseCsr)
                    );
                let a_ok = a.strides[1] == 1 || k <= 1 || (vectors && a.strides == [1, m as isize]);
                let out_ok =
                    out.strides[1] == 1 || out.dims[1] <= 1 || (vectors && out.strides[0] == 1);
                if !a_ok || !out_ok {
                    return Err(format!("a matmul operand with a strided last dim: {st:?}"));
                }
                match w {
                    Weight::Const(c, _) => {
                        if p.consts[c.0].dims != [k, out.dims[1]] {
                            return Err(format!("a weight constant not [K, N]: {st:?}"));
                        }
                    }
                    Weight::View(v) | Weight::Masked(v, _) => {
                        views.push(v);
                        if v.dims != [k, out.dims[1]] || (v.strides[1] != 1 && v.dims[1] > 1) {
                            return Err(format!("a run-time weight not [K, N] row-major: {st:?}"));
                        }
                        if let Weight::Masked(_, c) = w
                            && p.consts[c.0].dims != [k, out.dims[1]]
                        {
                            return Err(format!("a weight pattern not [K, N]: {st:?}"));
                        }
                    }
                }
                out
            }
            Stmt::Unary { out, x, .. }
            | Stmt::Clip { out, x, .. }
            | Stmt::Copy { out, x }
            | Stmt::Softmax { out, x, .. } => {
                views.push(x);
                out
            }
            Stmt::Binary { out, a, b, .. } => {
                views.extend([a, b]);
                out
            }
            Stmt::Loop { body, .. } => {
                if in_loop {
                    return Err("a nested loop".into());
                }
                check_guarantees(p, body, true)?;
                continue;
            }
            Stmt::Start { body } => {
                check_guarantees(p, body, in_loop)?;
                continue;
            }
            Stmt::Barrier => continue,
        };
        written(out)?;
        if !matches!(st, Stmt::MatMul { .. }) && views.iter().any(|v| v.dims != out.dims) {
            return Err(format!(
                "elementwise operands with other dims than the result: {st:?}"
            ));
        }
        if views.iter().any(|v| v.storage == out.storage) {
            return Err(format!("a statement writes a buffer it reads: {st:?}"));
        }
        if !in_loop && views.iter().chain([&out]).any(|v| v.step_stride != 0) {
            return Err(format!("a step stride outside a loop: {st:?}"));
        }
    }
    Ok(())
}

/// Runs a program on tensors; compares with `want` within 1e-4 + 1e-3 |want|.
fn run_and_compare(p: &Program, inputs: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    check_guarantees(p, &p.body, false)?;
    let flat = flat_inputs(p, inputs)?;
    let refs: Vec<&[f32]> = flat.iter().map(|v| v.as_slice()).collect();
    let got = interp::run(p, &refs)?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let w = flat_f32(w)?;
        let dims = &p.buffers[p.outputs[k].0].dims;
        if g.len() != w.len() {
            return Err(format!(
                "output {k}: {} elements ({dims:?}), expected {}",
                g.len(),
                w.len()
            ));
        }
        let bad = g
            .iter()
            .zip(&w)
            .enumerate()
            .find(|(_, (x, y))| !((*x - *y).abs() <= 1e-4 + 1e-3 * y.abs()));
        if let Some((i, (x, y))) = bad {
            return Err(format!("output {k} element {i}: got {x}, want {y}"));
        }
    }
    Ok(())
}

fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for sub in ["models", "extra"] {
        let mut d: Vec<PathBuf> = std::fs::read_dir(fixtures().join(sub))
            .expect("fixture folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.join("model.onnx").exists())
            .collect();
        d.sort();
        dirs.extend(d);
    }
    dirs
}

fn strategy_name(s: Option<Strategy>) -> &'static str {
    s.map_or("default", Strategy::name)
}

#[test]
fn fixture_models_run_through_the_kernel_interpreter() {
    let mut failures = Vec::new();
    let dirs = model_dirs();
    assert!(dirs.len() >= 30, "fixture models are missing");
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut g = import_file(&dir.join("model.onnx")).expect("import");
        let (inputs, want) = (read_set(dir, "input"), read_set(dir, "output"));
        // A symbolic batch (the Keras and dynamo exports) is fixed to the test data's: the
        // kernel IR is static.
        let open =
            |n: &petgraph::stable_graph::NodeIndex| g.nodes[*n].results[0].ty.concrete().is_none();
        if g.inputs.iter().any(open) {
            let shapes: Vec<(String, Vec<usize>)> = g
                .inputs
                .iter()
                .zip(&inputs)
                .map(|(n, t)| (g.nodes[*n].name.clone(), t.shape().to_vec()))
                .collect();
            hlstm_ir::bind_input_shapes(&mut g, &shapes).expect("the test data's shapes fit");
        }
        optimize(&mut g);
        for s in STRATEGIES {
            check_one(&g, s, &name, &inputs, &want, &mut failures);
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// Lowers with one strategy, runs, and compares with the reference outputs.
fn check_one(
    g: &Graph,
    s: Option<Strategy>,
    name: &str,
    inputs: &[Tensor],
    want: &[Tensor],
    failures: &mut Vec<String>,
) {
    let label = format!("{name} [{}]", strategy_name(s));
    match lower(
        g,
        &LowerOptions {
            strategy: s,
            ..Default::default()
        },
    ) {
        Ok(p) => match run_and_compare(&p, inputs, want) {
            Ok(()) => {
                let views = count_matmuls(&p.body, &|w| matches!(w, Weight::View(_)));
                let consts = count_matmuls(&p.body, &|w| matches!(w, Weight::Const(..)));
                println!(
                    "{label}: ok ({consts} matmul statements on constant weights, {views} on \
                     run-time weights)"
                );
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        },
        Err(e) => failures.push(format!("{label}: {e}")),
    }
}

#[test]
fn recurrent_node_tests_run_through_the_kernel_interpreter() {
    let manifest = std::fs::read_to_string(fixtures().join("onnx-node-manifest.txt"))
        .expect("the node-test manifest");
    let recurrent = |n: &str| {
        [
            "test_lstm_",
            "test_gru_",
            "test_simple_rnn_",
            "test_rnn_seq_length",
            "test_scan",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    };
    let names: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter(|l| recurrent(l))
        .collect();
    assert!(names.len() >= 20, "recurrent node tests are missing");
    let mut failures = Vec::new();
    for name in names {
        let dir = fixtures().join("onnx-node").join(name);
        let mut g = import_file(&dir.join("model.onnx")).expect("import");
        optimize(&mut g);
        let (inputs, want) = (read_set(&dir, "input"), read_set(&dir, "output"));
        for s in STRATEGIES {
            check_one(&g, s, name, &inputs, &want, &mut failures);
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

fn count_matmuls(body: &[Stmt], f: &dyn Fn(&Weight) -> bool) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::MatMul { w, .. } => f(w) as usize,
            Stmt::Loop { body, .. } => count_matmuls(body, f),
            _ => 0,
        })
        .sum()
}

/// Strategies of the constant weights inside the time loop.
fn loop_strategies(body: &[Stmt], in_loop: bool, out: &mut Vec<Strategy>) {
    for s in body {
        match s {
            Stmt::MatMul {
                w: Weight::Const(_, st),
                ..
            } if in_loop => out.push(*st),
            Stmt::Loop { body, .. } => loop_strategies(body, true, out),
            _ => {}
        }
    }
}

#[test]
fn weight_macs_equal_the_nonzero_multiply_adds_of_the_graph() {
    let h64: Vec<PathBuf> = model_dirs()
        .into_iter()
        .filter(|d| d.to_string_lossy().contains("H64"))
        .collect();
    assert!(h64.len() >= 15);
    for dir in h64 {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut g = import_file(&dir.join("model.onnx")).expect("import");
        optimize(&mut g);
        let st = hlstm_ir::stats::graph_stats(&g);
        for s in STRATEGIES {
            let p = lower(
                &g,
                &LowerOptions {
                    strategy: s,
                    ..Default::default()
                },
            )
            .expect("lowers");
            let (dense, nonzero) = p.weight_macs();
            let per_step = nonzero as f64 / (st.steps * st.batch) as f64;
            println!(
                "{name} [{}]: {per_step} nonzero multiply-adds per step ({dense} dense in all), \
                 graph {}",
                strategy_name(s),
                st.macs_per_step_nonzero
            );
            assert!(
                (per_step - st.macs_per_step_nonzero).abs() < 1e-6,
                "{name}: the kernel IR does {per_step} nonzero multiply-adds per step, the graph \
                 {}",
                st.macs_per_step_nonzero
            );
        }
    }
}

#[test]
fn the_default_strategy_follows_density() {
    let choose_strategy = |k, n, nonzeros| NO_TARGET.choose(k, n, nonzeros, 1);
    assert_eq!(choose_strategy(64, 256, 64 * 256), Strategy::Dense);
    assert_eq!(
        choose_strategy(64, 256, 64 * 256 / 4),
        Strategy::SparseUnrolled
    );
    assert_eq!(choose_strategy(64, 256, 64 * 256 / 3), Strategy::Dense);
    assert_eq!(
        choose_strategy(512, 2048, 512 * 2048 / 10),
        Strategy::SparseCsr
    );
    assert_eq!(choose_strategy(512, 2048, 512 * 2048 / 2), Strategy::Dense);
    let strategies = |model: &str| {
        let mut g =
            import_file(&fixtures().join("models").join(model).join("model.onnx")).expect("import");
        optimize(&mut g);
        let p = lower(&g, &LowerOptions::default()).expect("lowers");
        let mut s = Vec::new();
        loop_strategies(&p.body, false, &mut s);
        s
    };
    let dense = strategies("hlstm_scan_H64_X32_T8");
    let sparse = strategies("hlstm_scan_H64_X32_T8_sp97");
    assert!(
        !dense.is_empty() && dense.iter().all(|s| *s == Strategy::Dense),
        "{dense:?}"
    );
    assert!(
        !sparse.is_empty() && sparse.iter().all(|s| *s == Strategy::SparseUnrolled),
        "{sparse:?}"
    );
}

/// Lowers a hand-written graph (as written, and after the default pipeline) with every
/// strategy and compares the kernel interpreter with the graph interpreter on random inputs.
/// `SHOW_KIR=1` prints the programs.
fn check_hir(text: &str) -> Program {
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    hlstm_ir::verify::verify(&g).unwrap_or_else(|e| panic!("{e:?}"));
    let inputs = random_inputs(&g, 7);
    let want = hlstm_ir::interp::run(&g, &inputs).expect("the graph interpreter runs");
    let mut optimized = g.clone();
    optimize(&mut optimized);
    let mut first = None;
    for (label, graph) in [("as written", &g), ("optimized", &optimized)] {
        for s in STRATEGIES {
            let p = lower(
                graph,
                &LowerOptions {
                    strategy: s,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{label} [{}]: {e}", strategy_name(s)));
            run_and_compare(&p, &inputs, &want).unwrap_or_else(|e| {
                panic!(
                    "{label} [{}]: {e}\n{}",
                    strategy_name(s),
                    hlstm_ir::kernel::print(&p)
                )
            });
            if std::env::var_os("SHOW_KIR").is_some() && s.is_none() {
                eprintln!("// {label}\n{}", hlstm_ir::kernel::print(&p));
            }
            first.get_or_insert(p);
        }
    }
    first.expect("a program")
}

fn lower_err(text: &str) -> String {
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    match lower(&g, &LowerOptions::default()) {
        Ok(p) => panic!("lowered:\n{}", hlstm_ir::kernel::print(&p)),
        Err(e) => e,
    }
}

fn count(body: &[Stmt], f: &dyn Fn(&Stmt) -> bool) -> usize {
    body.iter()
        .map(|s| {
            f(s) as usize
                + match s {
                    Stmt::Loop { body, .. } => count(body, f),
                    _ => 0,
                }
        })
        .sum()
}

#[test]
fn layouts_views_and_copies() {
    let p = check_hir(
        r#"graph (%x: f32[2,3,4], %w: f32[5,4], %v: f32[4]) -> (a = %a, b = %b, c = %c, d = %d, e = %e, f = %f, a2 = %a) {
  %wt = transpose{perm=[1, 0]}(%w) : f32[4,5]
  %a = matmul(%x, %wt) : f32[2,3,5]
  %xt = transpose{perm=[1, 0, 2]}(%x) : f32[3,2,4]
  %b = matmul(%xt, %v) : f32[3,2]
  %idx = const i64[2,2] [3, 0, 0, 2]
  %g = gather{axis=2}(%x, %idx) : f32[2,3,2,2]
  %r = reverse{axis=1}(%g) : f32[2,3,2,2]
  %c = relu(%r) : f32[2,3,2,2]
  %s0 = const i64[1] [3]
  %s1 = const i64[1] [0]
  %s2 = const i64[1] [-1]
  %ax = const i64[1] [2]
  %sl = slice(%x, %s0, %s1, %ax, %s2) : f32[2,3,3]
  %shape = const i64[3] [2,3,3]
  %one = const f32[1,3,1] [1.0, 2.0, 3.0]
  %ex = expand(%one, %shape) : f32[2,3,3]
  %d = concat{axis=2}(%sl, %ex, %sl) : f32[2,3,9]
  %lo = const f32[] [-0.25]
  %hi = const f32[] [0.5]
  %cl = clip(%x, %lo, %hi) : f32[2,3,4]
  %fl = flatten{axis=2}(%cl) : f32[6,4]
  %e = gemm{alpha=0.5, beta=2.0, trans_a=false, trans_b=true}(%fl, %w, %v5) : f32[6,5]
  %v5 = const f32[5] [1.0, -1.0, 0.5, 0.0, 2.0]
  %wb = const f32[2,4,3] [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.25]
  %f = matmul(%x, %wb) : f32[2,3,3]
}"#,
    );
    // The run-time weight is transposed once into a row-major copy.
    assert!(
        count(
            &p.body,
            &|s| matches!(s, Stmt::MatMul { w: Weight::View(v), .. } if v.strides[1] == 1)
        ) >= 1
    );
}

#[test]
fn recurrences_swap_pass_through_and_run_backwards() {
    // Two states swapped each step, one passed through, one accumulated; the carried value as
    // a per-step output; a scanned input read backwards through a reverse; an invariant
    // transposed.
    check_hir(
        r#"graph (%x: f32[5,2,3], %a0: f32[2,3], %b0: f32[2,3], %m: f32[3,3]) -> (a = %a, b = %b, k = %k, s = %s, ys = %ys, zs = %zs) {
  %xr = reverse{axis=0}(%x) : f32[5,2,3]
  %mt = transpose{perm=[1, 0]}(%m) : f32[3,3]
  %a, %b, %k, %s, %ys, %zs = recurrence{carried=4, scanned=1, invariant=1, reverse=false, seq_lens=false}(%a0, %b0, %a0, %b0, %xr, %mt) "loop" : f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[5,2,3], f32[5,2,3]
    body (%ai: f32[2,3], %bi: f32[2,3], %ki: f32[2,3], %si: f32[2,3], %xt: f32[2,3], %mi: f32[3,3]) -> (a = %bi, b = %ai, k = %ki, s = %sn, y = %ai, z = %sn) {
      %p = matmul(%xt, %mi) : f32[2,3]
      %q = mul(%ai, %bi) : f32[2,3]
      %r = add(%si, %p) : f32[2,3]
      %sn = add(%r, %q) : f32[2,3]
    }
}"#,
    );
    // Reverse with constant sequence lengths shorter than the sequence: the stacked rows past
    // them are zero.
    check_hir(
        r#"graph (%x: f32[4,1,2], %h0: f32[1,2]) -> (h = %h, ys = %ys) {
  %len = const i64[1] [3]
  %h, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=true, seq_lens=true}(%h0, %x, %len) "rnn" : f32[1,2], f32[4,1,2]
    body (%hi: f32[1,2], %xt: f32[1,2]) -> (h = %hn, y = %hn) {
      %R = const f32[2,2] [0.5, -0.25, 0.125, 1.0]
      %hr = matmul(%hi, %R) : f32[1,2]
      %s = add(%xt, %hr) : f32[1,2]
      %hn = tanh(%s) : f32[1,2]
    }
}"#,
    );
}

#[test]
fn a_next_state_is_computed_in_its_state_buffer_when_nothing_reads_the_old_one_later() {
    // c' = f * c + i: once c' is computed nothing reads c, so c' is computed in c's buffer; h'
    // is a per-step output, computed in its stacked slot and copied to its state.
    let p = check_hir(
        r#"graph (%x: f32[3,1,4], %h0: f32[1,4]) -> (h = %h, c = %c, ys = %ys) {
  %h, %c, %ys = recurrence{carried=2, scanned=1, invariant=0, reverse=false, seq_lens=false}(%h0, %h0, %x) "cell" : f32[1,4], f32[1,4], f32[3,1,4]
    body (%hi: f32[1,4], %ci: f32[1,4], %xt: f32[1,4]) -> (h = %hn, c = %cn, y = %hn) {
      %f = sigmoid(%xt) : f32[1,4]
      %fc = mul(%f, %ci) : f32[1,4]
      %i = tanh(%hi) : f32[1,4]
      %cn = add(%fc, %i) : f32[1,4]
      %tc = tanh(%cn) : f32[1,4]
      %hn = mul(%f, %tc) : f32[1,4]
    }
}"#,
    );
    let Some(Stmt::Loop { body, .. }) = p.body.iter().find(|s| matches!(s, Stmt::Loop { .. }))
    else {
        panic!("no loop")
    };
    let copies = body
        .iter()
        .filter(|s| matches!(s, Stmt::Copy { .. }))
        .count();
    assert_eq!(copies, 1, "{}", hlstm_ir::kernel::print(&p));
}

/// Softmax and log-softmax of run-time values become `softmax` statements over the last dim
/// (another axis is moved last by views, no copy); cast(cast(x, bool), f32), the mask of a
/// ReLU's gradient, becomes one `not_zero` unary.
#[test]
fn softmax_and_bool_masks_of_run_time_values() {
    let p = check_hir(
        r#"graph (%x: f32[3,4,5], %w: f32[5,6]) -> (a = %a, b = %b, c = %c, m = %m) {
  %y = matmul(%x, %w) : f32[3,4,6]
  %a = softmax{axis=-1}(%y) : f32[3,4,6]
  %b = log_softmax{axis=1}(%y) : f32[3,4,6]
  %c = log_softmax{axis=0}(%x) : f32[3,4,5]
  %r = relu(%y) : f32[3,4,6]
  %mb = cast{to=bool}(%r) : bool[3,4,6]
  %m = cast{to=f32}(%mb) : f32[3,4,6]
}"#,
    );
    let softmax = count(&p.body, &|s| matches!(s, Stmt::Softmax { .. }));
    let log = count(&p.body, &|s| matches!(s, Stmt::Softmax { log: true, .. }));
    assert_eq!((softmax, log), (3, 2), "{}", hlstm_ir::kernel::print(&p));
    let masks = count(&p.body, &|s| {
        matches!(
            s,
            Stmt::Unary {
                op: hlstm_ir::Act::NotZero,
                ..
            }
        )
    });
    assert_eq!(masks, 1, "{}", hlstm_ir::kernel::print(&p));
    // The same inside a loop body: a softmax per step.
    check_hir(
        r#"graph (%x: f32[4,2,3], %h0: f32[2,3]) -> (h = %h, ys = %ys) {
  %h, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=false, seq_lens=false}(%h0, %x) "loop" : f32[2,3], f32[4,2,3]
    body (%hi: f32[2,3], %xt: f32[2,3]) -> (h = %hn, y = %p) {
      %s = add(%hi, %xt) : f32[2,3]
      %hn = log_softmax{axis=1}(%s) : f32[2,3]
      %p = softmax{axis=0}(%s) : f32[2,3]
    }
}"#,
    );
}

#[test]
fn what_the_kernel_ir_does_not_support_is_a_clear_error() {
    let e = lower_err(
        r#"graph (%x: f32[N,4]) -> (y = %y) {
  %y = relu(%x) : f32[N,4]
}"#,
    );
    assert!(
        e.contains("input 'x'") && e.contains("static shapes"),
        "{e}"
    );
    // A bool computed at run time is an f32 mask (`where` takes it: passes/tests/lower_logic.rs);
    // an integer from a run-time f32 would need truncation.
    let e = lower_err(
        r#"graph (%x: f32[2,4]) -> (y = %y) {
  %c = cast{to=i64}(%x) "trunc" : i64[2,4]
  %y = cast{to=f32}(%c) : f32[2,4]
}"#,
    );
    assert!(
        e.contains("node 'trunc' (cast)") && e.contains("not supported by the kernel IR yet"),
        "{e}"
    );
    let e = lower_err(
        r#"graph (%x: f32[2,4], %n: i64[2]) -> (y = %y) {
  %y = relu(%x) : f32[2,4]
}"#,
    );
    assert!(e.contains("input 'n'") && e.contains("f32"), "{e}");
    let e = lower_err(
        r#"graph (%x: f32[3,1,2], %h0: f32[1,2]) -> (h = %h) {
  %len = const i64[2] [3, 2]
  %h, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=false, seq_lens=true}(%h0, %x, %len) "rnn" : f32[1,2], f32[3,1,2]
    body (%hi: f32[1,2], %xt: f32[1,2]) -> (h = %hn, y = %hn) {
      %hn = add(%hi, %xt) : f32[1,2]
    }
}"#,
    );
    assert!(
        e.contains("node 'rnn' (recurrence)") && e.contains("unequal"),
        "{e}"
    );
    let e = lower_err(
        r#"graph (%x: f32[3,2,2], %h0: f32[2]) -> (h = %h) {
  %h, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=false, seq_lens=false}(%h0, %x) "outer" : f32[2], f32[3,2,2]
    body (%hi: f32[2], %xt: f32[2,2]) -> (h = %hn, y = %hi) {
      %hn, %zs = recurrence{carried=1, scanned=1, invariant=0, reverse=false, seq_lens=false}(%hi, %xt) "inner" : f32[2], f32[2,2]
        body (%gi: f32[2], %yt: f32[2]) -> (g = %gn, z = %gn) {
          %gn = add(%gi, %yt) : f32[2]
        }
    }
}"#,
    );
    assert!(
        e.contains("node 'outer' (recurrence)") && e.contains("nested"),
        "{e}"
    );
}

/// Sequence lengths given at run time: the loop runs the length the input gives (as f32 whole
/// numbers), the stacked rows past it are zero, and bad lengths are errors of the call.
#[test]
fn run_time_sequence_lengths_run_that_many_steps() {
    let text = r#"graph (%x: f32[3,1,2], %h0: f32[1,2], %len: i64[1]) -> (h = %h, ys = %ys) {
  %h, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=REV, seq_lens=true}(%h0, %x, %len) "rnn" : f32[1,2], f32[3,1,2]
    body (%hi: f32[1,2], %xt: f32[1,2]) -> (h = %hn, y = %hn) {
      %hn = add(%hi, %xt) : f32[1,2]
    }
}"#;
    let x: Vec<f32> = (1..=6).map(|v| v as f32).collect();
    let h0 = [0.5f32, -0.5];
    for reverse in [false, true] {
        let g = parse(&text.replace("REV", &reverse.to_string())).unwrap();
        let p = lower(&g, &LowerOptions::default()).unwrap();
        assert_eq!(p.seq_lens_input(), Some(2));
        assert_eq!(p.max_steps, None, "the time axis stays static");
        assert!(
            p.static_steps_reason
                .as_deref()
                .is_some_and(|r| r.contains("sequence lengths"))
        );
        let steps_loops = count(&p.body, &|s| {
            matches!(
                s,
                Stmt::Loop {
                    run: hlstm_ir::kernel::LoopRun::Steps,
                    ..
                }
            )
        });
        assert_eq!(steps_loops, 1, "{}", hlstm_ir::kernel::print(&p));
        for len in 0..=3usize {
            let lens = [len as f32];
            let got = interp::run(&p, &[&x, &h0, &lens]).unwrap();
            let want = hlstm_ir::interp::run(
                &g,
                &[
                    Tensor::from_f32(&[3, 1, 2], x.clone()).unwrap(),
                    Tensor::from_f32(&[1, 2], h0.to_vec()).unwrap(),
                    Tensor::from_f32(&[1], vec![len as f32])
                        .unwrap()
                        .cast(hlstm_ir::DType::I64),
                ],
            )
            .unwrap();
            for (k, w) in want.iter().enumerate() {
                assert_eq!(
                    got[k],
                    flat_f32(w).unwrap(),
                    "reverse {reverse}, length {len}"
                );
            }
            // Rows past the length are zero.
            assert!(got[1][2 * len..].iter().all(|v| *v == 0.0));
        }
        for bad in [4.0f32, 1.5, -1.0] {
            let e = interp::run(&p, &[&x, &h0, &[bad]]).unwrap_err();
            assert!(e.contains("not a whole number from 0 to 3"), "{bad}: {e}");
        }
    }
    // Unequal lengths in a batch are refused by the call.
    let e = hlstm_ir::kernel::steps_from_lengths(&[2.0, 3.0], 3).unwrap_err();
    assert!(e.contains("differ"), "{e}");
}
