//! The JIT engine (`run --engine jit`: lowering to the kernel IR, then Cranelift) on every
//! fixture model and every recurrent ONNX node test, against the stored reference outputs; every
//! `--sparse-strategy` and `--cpu` on a representative subset.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run_jit(dir: &Path, flags: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(["run", "--engine", "jit"])
        .args(flags)
        .arg(dir.join("model.onnx"))
        .arg("--test-data")
        .arg(dir.join("test_data_set_0"))
        .output()
        .expect("the hlstmc binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check(dirs: &[PathBuf], flags: &[&str]) {
    let mut failures = Vec::new();
    for d in dirs {
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        let (ok, text) = run_jit(d, flags);
        if !ok {
            failures.push(format!("{name} {flags:?}:\n{text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The ONNX node tests of the recurrent ops (LSTM, GRU, RNN, Scan).
fn is_recurrent_node_test(n: &str) -> bool {
    [
        "test_lstm",
        "test_gru",
        "test_simple_rnn",
        "test_rnn",
        "test_scan",
    ]
    .iter()
    .any(|p| n.starts_with(p))
}

fn dirs(folder: &str, filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join(folder))
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && filter(&p.file_name().expect("name").to_string_lossy()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_fixture_model_through_the_jit() {
    let mut all = dirs("models", |_| true);
    all.extend(dirs("extra", |_| true));
    assert!(all.len() >= 34);
    check(&all, &[]);
}

/// Every fixture model split across 2 threads, and the recurrent node tests across 3 (their
/// matmuls are tiny: most statements run on thread 0, the rest split, with barriers).
#[test]
fn every_fixture_and_node_test_on_several_threads() {
    let mut all = dirs("models", |_| true);
    all.extend(dirs("extra", |_| true));
    check(&all, &["--threads", "2"]);
    let nodes = dirs("onnx-node", is_recurrent_node_test);
    check(&nodes, &["--threads", "3"]);
}

#[test]
fn recurrent_node_tests_through_the_jit() {
    let nodes = dirs("onnx-node", is_recurrent_node_test);
    assert!(
        nodes.len() >= 20,
        "found {} recurrent node tests",
        nodes.len()
    );
    check(&nodes, &[]);
}

#[test]
fn every_strategy_and_cpu_on_a_subset() {
    let subset: Vec<PathBuf> = [
        "models/hlstm_scan_H64_X32_T8_sp97",
        "models/hlstm_scan_H64_X32_T8",
        "models/lstm_std_X16_H24_T5_batch3",
        "models/torch_hlstm_pergate_H64_X32_T8_sp90",
        "extra/torch_gru_2layer_batchfirst_B3",
    ]
    .iter()
    .map(|p| fixtures().join(p))
    .collect();
    for strategy in ["dense", "sparse-unrolled", "sparse-csr"] {
        check(&subset, &["--sparse-strategy", strategy]);
    }
    for cpu in ["x86-64-v2", "x86-64-v3"] {
        // A machine without AVX2 cannot run v3 code; the JIT refuses it with a message.
        let (ok, text) = run_jit(&subset[0], &["--cpu", cpu]);
        if !ok && text.contains("this machine cannot run") {
            println!("--cpu {cpu}: this machine cannot run it ({})", text.trim());
            continue;
        }
        check(&subset, &["--cpu", cpu]);
    }
}

/// Numbers (1-based, pre-order) of the matmul statements in a `.kir` listing: the source
/// locations the code generator gives their instructions (`@NNNN`, hex, in CLIF).
fn matmul_statement_numbers(kir: &str) -> Vec<u32> {
    let mut numbers = Vec::new();
    let mut n = 0;
    for line in kir.lines() {
        let l = line.trim_start();
        let header = ["program ", "steps ", "buffer ", "const "]
            .iter()
            .any(|h| l.starts_with(h));
        if l.is_empty() || l == "}" || header {
            continue;
        }
        n += 1;
        if l.starts_with("matmul ") {
            numbers.push(n);
        }
    }
    numbers
}

/// The nonzero count of each matmul's constant weight, in the order the `.kir` lists them (0 for
/// a run-time weight).
fn matmul_weight_nonzeros(kir: &str) -> Vec<u64> {
    let mut nnz = std::collections::HashMap::new();
    for l in kir.lines().map(str::trim_start) {
        if let Some(rest) = l.strip_prefix("const $") {
            let id = rest.split_whitespace().next().unwrap_or("").to_string();
            let count = l
                .split_whitespace()
                .skip_while(|w| *w != "nnz")
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(c) = count {
                nnz.insert(id, c);
            }
        }
    }
    kir.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("matmul "))
        .map(|l| {
            l.split(" x $")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|id| nnz.get(id).copied())
                .unwrap_or(0)
        })
        .collect()
}

fn hlstmc_stdout(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Under the unrolled strategy every nonzero weight of the 97%-pruned H64 H-LSTM is one
/// multiply(-add) in the CLIF of its matmul (the first product of each accumulator is an
/// fmul, the rest fma), so their count is the optimized graph's `macs_per_step_nonzero`;
/// the activations' polynomial FMAs belong to other statements and are not counted.
#[test]
fn clif_weight_fmas_equal_the_nonzero_multiply_adds() {
    let model = fixtures().join("models/hlstm_scan_H64_X32_T8_sp97/model.onnx");
    let model = model.to_str().expect("utf-8 path");
    let strategy = ["--sparse-strategy", "sparse-unrolled"];
    let kir = hlstmc_stdout(&[&["opt", model, "--emit", "kir"][..], &strategy].concat());
    let clif = hlstmc_stdout(&[&["opt", model, "--emit", "clif"][..], &strategy].concat());
    let inspect = hlstmc_stdout(&["inspect", "--json", "--optimized", model]);
    let stats: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    let want = stats["macs_per_step_nonzero"].as_u64().expect("macs");
    let matmuls = matmul_statement_numbers(&kir);
    assert!(matmuls.len() >= 2, "{kir}");
    let tags: Vec<String> = matmuls.iter().map(|n| format!("@{n:04x} ")).collect();
    let mut products = 0;
    let mut fmas = 0;
    // A matmul the code hands to a wide kernel (docs/kernels.md: the hoisted projection over
    // T rows, with AVX2 or AVX-512) has a call instead of its products: count its nonzeros.
    let mut calls = vec![false; tags.len()];
    for line in clif.lines() {
        let l = line.trim_start();
        let Some(i) = tags.iter().position(|t| l.starts_with(t.as_str())) else {
            continue;
        };
        if l.contains("= fma ") {
            fmas += 1;
            products += 1;
        } else if l.contains("= fmul ") {
            products += 1;
        } else if l.contains(" call fn") {
            calls[i] = true;
        }
    }
    let nonzeros = matmul_weight_nonzeros(&kir);
    assert_eq!(nonzeros.len(), tags.len(), "{kir}");
    let called: u64 = (0..tags.len())
        .filter(|&i| calls[i])
        .map(|i| nonzeros[i])
        .sum();
    assert_eq!(
        products + called,
        want,
        "weight products in the CLIF (and in wide-kernel calls) vs macs_per_step_nonzero"
    );
    // The CLIF of this machine uses FMAs when it has them; most products are FMAs.
    if clif.contains("= fma ") {
        assert!(fmas * 2 > products, "{fmas} FMAs of {products} products");
    }
    // The activations use FMAs too, outside the matmuls: the filter above is what separates.
    let all = clif.lines().filter(|l| l.contains("= fma ")).count() as u64;
    assert!(all >= fmas);
}

/// A model exported with an open batch (the shipped digits H-LSTM: X [8, N, 8]) runs through
/// the JIT: `run` imports it again with the shape of the input it is given.
#[test]
fn an_open_batch_is_fixed_by_the_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(["run", "--engine", "jit"])
        .arg(root.join("examples/digits-hlstm.onnx"))
        .arg("--test-data")
        .arg(root.join("examples/digits-hlstm/test_data_set_0"))
        .output()
        .expect("the hlstmc binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PASS") && !text.contains("note:"), "{text}");
}

/// A lowering that names no target chooses as the CPU target does (the passes crate repeats
/// the CPU's thresholds for it: it does not depend on the backends); the PTX target makes the
/// CPU's choice of kernels but keeps every buffer's rows outermost.
#[test]
fn the_default_kernel_selection_is_the_cpus() {
    use hlstmc::backends::{cpu, ptx};
    use hlstmc::ir::kernel::KernelSelector;
    assert_eq!(hlstmc::passes::lower::NO_TARGET, cpu::select::SELECTOR);
    assert_eq!(
        ptx::select::SELECTOR,
        hlstmc::ir::kernel::select::Thresholds {
            rows_innermost: None,
            ..cpu::select::SELECTOR
        }
    );
    assert_eq!(cpu::select::SELECTOR.rows_innermost(), Some(4));
    assert_eq!(ptx::select::SELECTOR.rows_innermost(), None);
}
