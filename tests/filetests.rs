//! File tests, in the way of Cranelift's filetests: one harness for every IR level. Each file
//! under `tests/filetests/` names its stage at the top, then gives the input, a separator line
//! and the expected text:
//!
//! ```text
//! test optimize                    <- the stage (see below)
//! passes: fold-constants, dce      <- directives of the stage, one a line, before the input
//! // what the test shows           <- `//` comments anywhere
//! graph (...) -> (...) { ... }     <- the input
//! // expect:
//! ...                              <- the expected text
//! ```
//!
//! Stages:
//!
//! - `test optimize` (`passes: a, b` or `passes: default`): `.hir` in; the passes run with
//!   `PassManager`; `.hir` out. The verifier runs on both graphs; the reference interpreter runs
//!   both on the same random inputs (three seeds) and must agree within 1e-5; the result must
//!   parse back to the same graph.
//! - `test lower` (optional `passes:` run first): `.hir` in; `passes::lower::lower` with default
//!   options; `.kir` out. The printed program must parse back to the same program, and the
//!   kernel interpreter must agree with the reference interpreter within 1e-4.
//! - `test clif` (optional `target x86-64-v3` (the default), `x86-64-v2` or `native`): `.kir`
//!   in (parsed by `kernel::parse`); the Cranelift IR of the JIT's function out. Where the host
//!   runs that target, the JIT's outputs must agree with the kernel interpreter within 1e-4.
//! - `test ptx`: `.kir` in; `backends::ptx::compile` with default options; the PTX text out.
//! - `test autodiff` (`autodiff: LOSS wrt P, Q`, optional `save: recompute`): the forward
//!   `.hir` in; the training graph out. The gradient check of `trainer/tests/common` runs on
//!   random inputs.
//! - `test model` (`model: NAME`, a tiny model of `models()` below; no input): the training
//!   graph of `hlstm_trainer::models::build` out.
//!
//! The comparison trims trailing whitespace from every line and from the end; a mismatch shows
//! a line diff (`-` expected, `+` actual). To rewrite the expected text after an intended
//! change, run
//!
//! ```text
//! HLSTMC_BLESS=1 cargo test --test filetests
//! ```
//!
//! (every other check still runs and still fails), and review the diff before committing it.
//! A file may be run alone: `FILETEST=lower/tanh cargo test --test filetests` runs the files
//! whose path contains `lower/tanh`.

#[path = "../trainer/tests/common/mod.rs"]
mod trainer_common;

use hlstm_backends::cpu::{CpuIsa, CpuOptions, JitProgram};
use hlstm_ir::kernel::{self, Program};
use hlstm_ir::rng::Rng;
use hlstm_ir::text::{parse, print};
use hlstm_ir::{DType, Graph, Tensor};
use hlstm_passes::verify_each::random_inputs;
use hlstm_passes::{DEFAULT_PIPELINE, Instrumentation, PassManager};
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, ModelConfig};
use hlstm_trainer::{Options, SaveMode, training_graph};
use std::path::{Path, PathBuf};

/// The line that separates the input from the expected output.
const SEPARATOR: &str = "// expect:";
/// Directives: the header lines that are not input.
const DIRECTIVES: [&str; 6] = [
    "test ",
    "passes:",
    "autodiff:",
    "save:",
    "model:",
    "target ",
];
/// Seeds of the random inputs for the numeric checks of `test optimize` and `test lower`.
const SEEDS: [u64; 3] = [1, 0x9e37_79b9_7f4a_7c15, 12345];
/// Largest absolute difference allowed between the outputs before and after the passes.
const TOLERANCE: f32 = 1e-5;
/// The same between the reference interpreter and a kernel program (f32 sums in other orders).
const KERNEL_TOLERANCE: f32 = 1e-4;
/// The bless variable.
const BLESS: &str = "HLSTMC_BLESS";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

/// Every `.hir` and `.kir` file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("a readable folder") {
            let p = e.expect("a readable entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "hir" || e == "kir") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file test split into its parts.
#[derive(Debug)]
struct FileTest {
    stage: String,
    /// Directives other than `test`, in order: (key, value).
    directives: Vec<(String, String)>,
    /// Everything up to and including the separator line (kept when blessing).
    head: String,
    /// The input: the text before the separator with directive lines blanked, so that parse
    /// errors give the file's line numbers.
    input: String,
    expected: String,
}

impl FileTest {
    fn get(&self, key: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn split(text: &str) -> Result<FileTest, String> {
    let mut head = String::new();
    let mut input = String::new();
    let mut stage = None;
    let mut directives = Vec::new();
    let mut in_header = true;
    let mut lines = text.split_inclusive('\n');
    let mut found = false;
    for (i, line) in lines.by_ref().enumerate() {
        head.push_str(line);
        let t = line.trim();
        if t == SEPARATOR {
            found = true;
            break;
        }
        let directive = in_header && DIRECTIVES.iter().any(|d| t.starts_with(d));
        if directive {
            let (k, v) = match t.strip_prefix("test ") {
                Some(v) => ("test", v),
                None => t.split_once([':', ' ']).expect("a directive has a key"),
            };
            let v = v.trim().to_string();
            if k == "test" {
                if stage.is_some() {
                    return Err(format!("line {}: a second 'test' line", i + 1));
                }
                stage = Some(v);
            } else {
                if directives.iter().any(|(d, _)| d == k) {
                    return Err(format!("line {}: a second '{k}' line", i + 1));
                }
                directives.push((k.to_string(), v));
            }
            input.push('\n');
            continue;
        }
        if !t.is_empty() && !t.starts_with("//") {
            in_header = false;
        }
        input.push_str(line);
    }
    if !found {
        return Err(format!("no '{SEPARATOR}' line"));
    }
    let stage = stage.ok_or("no 'test STAGE' line at the top")?;
    Ok(FileTest {
        stage,
        directives,
        head,
        input,
        expected: lines.collect(),
    })
}

/// Trailing whitespace trimmed from every line and from the end.
fn normalize(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

/// A line diff (longest common subsequence): ` ` both, `-` expected only, `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

/// The pass list of a `passes:` directive (`default`: the default pipeline).
fn pass_names(v: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err("the 'passes:' line names no pass".into());
    }
    Ok(if names == ["default"] {
        DEFAULT_PIPELINE.iter().map(|s| s.to_string()).collect()
    } else {
        names
    })
}

fn parse_graph(input: &str) -> Result<Graph, String> {
    let g = parse(input).map_err(|e| format!("the input does not parse: {e}"))?;
    hlstm_ir::verify::verify(&g).map_err(|e| format!("the input graph is ill-formed: {e}"))?;
    Ok(g)
}

fn run_passes(g: &Graph, passes: &str) -> Result<Graph, String> {
    let names = pass_names(passes)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pm = PassManager::new(&names, Instrumentation::default())?;
    let mut out = g.clone();
    let mut log = Vec::new();
    pm.run(&mut out, &mut log)?;
    assert!(log.is_empty(), "default instrumentation writes nothing");
    hlstm_ir::verify::verify(&out)
        .map_err(|e| format!("the graph after the passes is ill-formed: {e}"))?;
    Ok(out)
}

/// The first element of two f32 lists farther apart than `tol`.
fn compare_f32(what: &str, want: &[f32], got: &[f32], tol: f32) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(format!(
            "{what}: {} elements, {} expected",
            got.len(),
            want.len()
        ));
    }
    for (i, (x, y)) in want.iter().zip(got).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol;
        if !same {
            return Err(format!("{what} element {i}: {y}, {x} expected"));
        }
    }
    Ok(())
}

/// The interpreter's outputs of two graphs on the same random inputs agree.
fn check_numbers(before: &Graph, after: &Graph) -> Result<(), String> {
    for seed in SEEDS {
        let inputs = random_inputs(before, seed);
        let want = hlstm_ir::interp::run(before, &inputs)
            .map_err(|e| format!("the input graph fails to run (seed {seed}): {e}"))?;
        let got = hlstm_ir::interp::run(after, &inputs)
            .map_err(|e| format!("the output graph fails to run (seed {seed}): {e}"))?;
        if want.len() != got.len() {
            return Err(format!(
                "{} outputs after the passes, {} before",
                got.len(),
                want.len()
            ));
        }
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            if w.dtype() != g.dtype() || w.shape() != g.shape() {
                return Err(format!(
                    "seed {seed}: output {k}: {}{:?} after the passes, {}{:?} before",
                    g.dtype(),
                    g.shape(),
                    w.dtype(),
                    w.shape()
                ));
            }
            let (w, g) = (f32s(w), f32s(g));
            compare_f32(
                &format!("seed {seed}: output {k} after the passes"),
                &w,
                &g,
                TOLERANCE,
            )?;
        }
    }
    Ok(())
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.cast(DType::F32)
        .as_f32()
        .expect("cast to f32")
        .iter()
        .copied()
        .collect()
}

/// The printed program parses back to the same program.
fn check_kir_round_trip(p: &Program) -> Result<String, String> {
    let (text, store) = kernel::print_with_weights(p);
    let back = kernel::parse_with_weights(&text, &store)
        .map_err(|e| format!("the printed program does not parse back: {e}"))?;
    if back != *p {
        return Err("the printed program parses back to a different program".into());
    }
    Ok(text)
}

/// Random f32 inputs of a kernel program, by the seed.
fn kernel_inputs(p: &Program, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    p.inputs
        .iter()
        .map(|b| rng.vec(p.buffers[b.0].len(), -1.0, 1.0))
        .collect()
}

fn stage_optimize(t: &FileTest) -> Result<String, String> {
    let input = parse_graph(&t.input)?;
    let passes = t.get("passes").ok_or("no 'passes:' line")?;
    let output = run_passes(&input, passes)?;
    check_numbers(&input, &output)?;
    let actual = print(&output);
    let reparsed =
        parse(&actual).map_err(|e| format!("the printed result does not parse back: {e}"))?;
    if reparsed != output {
        return Err("the printed result parses back to a different graph".into());
    }
    Ok(actual)
}

fn stage_lower(t: &FileTest) -> Result<String, String> {
    let mut g = parse_graph(&t.input)?;
    if let Some(passes) = t.get("passes") {
        g = run_passes(&g, passes)?;
    }
    let p = hlstm_passes::lower::lower(&g, &Default::default())?;
    let text = check_kir_round_trip(&p)?;
    let f32_inputs = g
        .inputs
        .iter()
        .all(|&n| g.nodes[n].results[0].ty.dtype == DType::F32);
    if f32_inputs {
        for seed in SEEDS {
            let inputs = random_inputs(&g, seed);
            let want = hlstm_ir::interp::run(&g, &inputs)
                .map_err(|e| format!("the graph fails to run (seed {seed}): {e}"))?;
            let flat: Vec<Vec<f32>> = inputs.iter().map(f32s).collect();
            let refs: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
            let got = kernel::interp::run(&p, &refs)
                .map_err(|e| format!("the kernel program fails to run (seed {seed}): {e}"))?;
            if want.len() != got.len() {
                return Err(format!(
                    "{} outputs lowered, {} in the graph",
                    got.len(),
                    want.len()
                ));
            }
            for (k, (w, g)) in want.iter().zip(&got).enumerate() {
                compare_f32(
                    &format!("seed {seed}: lowered output {k}"),
                    &f32s(w),
                    g,
                    KERNEL_TOLERANCE,
                )?;
            }
        }
    }
    Ok(text)
}

fn parse_kir(input: &str) -> Result<Program, String> {
    kernel::parse(input).map_err(|e| format!("the input does not parse: {e}"))
}

/// Whether this machine runs code for `isa`.
fn host_runs(isa: CpuIsa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            CpuIsa::Native => true,
            CpuIsa::X86_64V2 => std::arch::is_x86_feature_detected!("sse4.2"),
            CpuIsa::X86_64V3 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

fn stage_clif(t: &FileTest) -> Result<String, String> {
    let p = parse_kir(&t.input)?;
    let isa: CpuIsa = t.get("target").unwrap_or("x86-64-v3").parse()?;
    let opts = CpuOptions {
        isa,
        ..Default::default()
    };
    let jit = JitProgram::compile(&p, &opts)?;
    if host_runs(isa) {
        for seed in SEEDS {
            let ins = kernel_inputs(&p, seed);
            let refs: Vec<&[f32]> = ins.iter().map(Vec::as_slice).collect();
            let want = kernel::interp::run(&p, &refs)?;
            let mut outs: Vec<Vec<f32>> = want.iter().map(|w| vec![0.0; w.len()]).collect();
            let mut slots: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            jit.run(&refs, &mut slots)?;
            for (k, (w, g)) in want.iter().zip(&outs).enumerate() {
                compare_f32(
                    &format!("seed {seed}: JIT output {k}"),
                    w,
                    g,
                    KERNEL_TOLERANCE,
                )?;
            }
        }
    }
    Ok(jit.clif())
}

fn stage_ptx(t: &FileTest) -> Result<String, String> {
    let p = parse_kir(&t.input)?;
    Ok(hlstm_backends::ptx::compile(&p, &Default::default())?.ptx)
}

/// The project's random inputs (f32 in [-1, 1)); autodiff tests take f32 inputs of static
/// shapes only.
fn autodiff_inputs(g: &Graph, seed: u64) -> Result<Vec<Tensor>, String> {
    for &n in &g.inputs {
        let ty = &g.nodes[n].results[0].ty;
        if ty.dtype != DType::F32 {
            return Err("autodiff tests take f32 inputs only".to_string());
        }
        ty.concrete()
            .ok_or("autodiff tests have static shapes only")?;
    }
    Ok(random_inputs(g, seed))
}

fn stage_autodiff(t: &FileTest) -> Result<String, String> {
    let spec = t.get("autodiff").ok_or("no 'autodiff:' line")?;
    let (loss, params) = spec
        .split_once(" wrt ")
        .ok_or("expected 'autodiff: LOSS wrt P, Q'")?;
    let params: Vec<&str> = params.split(',').map(str::trim).collect();
    let save = match t.get("save") {
        None | Some("intermediates") => SaveMode::Intermediates,
        Some("recompute") => SaveMode::Recompute,
        Some(other) => return Err(format!("unknown save mode '{other}'")),
    };
    let fwd = parse_graph(&t.input)?;
    let opts = Options { save };
    let tg = training_graph(&fwd, loss.trim(), &params, &opts).map_err(|e| e.to_string())?;
    let inputs = autodiff_inputs(&fwd, 7)?;
    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        trainer_common::gradcheck(&fwd, loss.trim(), &params, &inputs, opts)
    }));
    if check.is_err() {
        return Err("the gradient check fails (its message is above)".into());
    }
    Ok(print(&tg))
}

/// The tiny models whose training graphs `test model` prints: name and configuration.
fn models() -> Vec<(&'static str, ModelConfig, Dims)> {
    let hlstm = ModelConfig {
        cell: CellKind::Hlstm {
            hidden_layers: 1,
            hidden_width: 3,
        },
        input: InputKind::Features { size: 2 },
        head: Head::Classifier { classes: 2 },
        layers: 1,
        hidden: 2,
        dropout: true,
    };
    let lm = ModelConfig {
        cell: CellKind::Lstm,
        input: InputKind::Tokens { vocab: 4, embed: 2 },
        head: Head::NextToken { vocab: 4 },
        layers: 1,
        hidden: 2,
        dropout: false,
    };
    vec![
        ("hlstm_classifier", hlstm, Dims::known(3, 2)),
        ("lstm_next_token", lm, Dims::known(3, 2)),
    ]
}

fn stage_model(t: &FileTest) -> Result<String, String> {
    let name = t.get("model").ok_or("no 'model:' line")?;
    let (_, cfg, dims) = models()
        .into_iter()
        .find(|(n, ..)| *n == name)
        .ok_or_else(|| format!("no model '{name}' in the table of tests/filetests.rs"))?;
    if !normalize(&t.input)
        .lines()
        .all(|l| l.trim().is_empty() || l.trim().starts_with("//"))
    {
        return Err("a 'test model' file has no input".into());
    }
    let model = models::build(&cfg, &dims, true).map_err(|e| e.to_string())?;
    let tg = model
        .training_graph(&Options::default())
        .map_err(|e| e.to_string())?;
    Ok(print(&tg))
}

/// Runs one file; with `bless`, rewrites its expected part instead of comparing.
fn check_file(path: &Path, bless: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let t = split(&text)?;
    let actual = match t.stage.as_str() {
        "optimize" => stage_optimize(&t),
        "lower" => stage_lower(&t),
        "clif" => stage_clif(&t),
        "ptx" => stage_ptx(&t),
        "autodiff" => stage_autodiff(&t),
        "model" => stage_model(&t),
        s => Err(format!(
            "unknown stage 'test {s}' (optimize, lower, clif, ptx, autodiff, model)"
        )),
    }?;
    if normalize(&t.expected) == normalize(&actual) {
        return Ok(());
    }
    if bless {
        let new = format!("{}{}\n", t.head, normalize(&actual));
        std::fs::write(path, new).map_err(|e| format!("cannot write: {e}"))?;
        eprintln!("blessed {}", path.display());
        return Ok(());
    }
    Err(format!(
        "the output differs from the expected text (- expected, + actual; {BLESS}=1 rewrites \
         it):\n{}",
        diff(&normalize(&t.expected), &normalize(&actual))
    ))
}

#[test]
fn filetests() {
    let bless = std::env::var(BLESS).is_ok_and(|v| v == "1");
    let only = std::env::var("FILETEST").ok();
    let files: Vec<PathBuf> = files(&root())
        .into_iter()
        .filter(|f| {
            only.as_deref()
                .is_none_or(|o| f.to_string_lossy().contains(o))
        })
        .collect();
    assert!(!files.is_empty(), "no file tests in {}", root().display());
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = check_file(f, bless) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} file tests fail:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_stage_has_files() {
    let files = files(&root());
    for stage in ["optimize", "lower", "clif", "ptx", "autodiff", "model"] {
        let n = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                split(&text).is_ok_and(|t| t.stage == stage)
            })
            .count();
        assert!(n > 0, "no 'test {stage}' file");
    }
}

#[test]
fn harness_splits_and_diffs() {
    let t = split(
        "test optimize\npasses: dce, simplify\n// a comment\ngraph () -> () {\n}\n// expect:\n\
         graph () -> () {\n}\n",
    )
    .expect("splits");
    assert_eq!(t.stage, "optimize");
    assert_eq!(t.get("passes"), Some("dce, simplify"));
    assert_eq!(t.input, "\n\n// a comment\ngraph () -> () {\n}\n");
    assert_eq!(t.expected, "graph () -> () {\n}\n");
    assert!(t.head.ends_with("// expect:\n"));
    assert_eq!(
        pass_names(
            split("test optimize\npasses: default\n// expect:\n")
                .unwrap()
                .get("passes")
                .unwrap()
        )
        .unwrap(),
        DEFAULT_PIPELINE
    );
    // Directives only at the top: a later `test ` line is input.
    let t = split("test lower\ngraph\ntest x\n// expect:\n").unwrap();
    assert_eq!(t.input, "\ngraph\ntest x\n");
    assert!(
        split("graph () -> () {}\n// expect:\n").is_err(),
        "no test line"
    );
    assert!(
        split("test optimize\ngraph () -> () {}\n").is_err(),
        "no separator"
    );
    assert!(
        split("test a\ntest b\n// expect:\n").is_err(),
        "two test lines"
    );
    assert_eq!(normalize("a  \nb\t\n\n\n"), "a\nb");
    assert_eq!(diff("a\nb\nc", "a\nx\nc"), "  a\n- b\n+ x\n  c\n");
}
