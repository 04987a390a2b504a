//! Random H-LSTMs (hlstm-bench's generator: 1 to 3 hidden layers per gate, random widths and
//! sparsity, whole neurons cut, unused inputs) in the Scan, unrolled and per-gate Gemm forms,
//! run through the `hlstmc` binary:
//!
//! - every form, at -O0 and through the default pipeline, matches a plain f64 evaluator of the
//!   cell (|got - want| <= 1e-4 + 1e-3 |want|);
//! - for the Scan form, `inspect --optimized --json` reports `macs_per_step_nonzero` equal to an
//!   independent count of the live multiply-adds (`hlstm_bench::live_macs`);
//! - that count reproduces the table in tests/fixtures/README.md on the fixture models;
//! - the unrolled and Gemm forms reach the same count, and
//!   the same `loop_body_ops` and `params_nonzero`, as the Scan form.
//!
//! `HLSTM_RANDOM_SPECS=N` runs N specs instead of 20.

use hlstm_bench::{
    Form, Hlstm, HlstmSpec, Layer, ScanWeights, XSlicing, evaluate, generate, live_macs,
    model_bytes, npy, random_input,
};
use onnx_protobuf::{GraphProto, ModelProto, TensorProto};
use protobuf::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn specs() -> Vec<HlstmSpec> {
    let n: u64 = std::env::var("HLSTM_RANDOM_SPECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    (0..n)
        .map(|i| HlstmSpec::random(0x51ED_0000 + i, 24, 5, 3))
        .collect()
}

/// The three forms for spec number `i`; the Scan weight placement and the unrolled x_t slicing
/// alternate between specs so that both variants of each are covered.
fn forms(i: usize) -> [Form; 3] {
    [
        Form::Scan(if i.is_multiple_of(2) {
            ScanWeights::Outer
        } else {
            ScanWeights::Body
        }),
        Form::Unrolled(if i % 4 < 2 {
            XSlicing::Gather
        } else {
            XSlicing::SplitSqueeze
        }),
        Form::TorchGemm,
    ]
}

fn hlstmc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs")
}

struct Case {
    spec: HlstmSpec,
    m: Hlstm,
    dir: tempfile::TempDir,
    x_path: PathBuf,
}

impl Case {
    fn new(spec: HlstmSpec) -> Case {
        let m = generate(&spec);
        let dir = tempfile::tempdir().expect("a temp dir");
        let x_path = dir.path().join("X.npy");
        let x = random_input(spec.seed, spec.steps, spec.batch, spec.inputs);
        npy::write_f32(&x_path, &[spec.steps, spec.batch, spec.inputs], &x).expect("writes X");
        Case {
            spec,
            m,
            dir,
            x_path,
        }
    }

    fn x(&self) -> Vec<f32> {
        random_input(
            self.spec.seed,
            self.spec.steps,
            self.spec.batch,
            self.spec.inputs,
        )
    }

    fn write(&self, form: Form) -> PathBuf {
        let p = self.dir.path().join(format!("{}.onnx", form.name()));
        std::fs::write(
            &p,
            model_bytes(&self.m, self.spec.steps, self.spec.batch, form),
        )
        .expect("writes the model");
        p
    }

    fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "seed {:#x}: X={} H={} T={} B={} widths={:?} density={:.3} {:?} cut={} unused={}",
            s.seed,
            s.inputs,
            s.hidden,
            s.steps,
            s.batch,
            s.widths,
            s.density,
            s.pruning,
            s.cut_neurons,
            s.unused_inputs
        )
    }
}

/// Compares an output file with the reference; None when it matches.
fn compare(path: &Path, shape: &[usize], want: &[f64]) -> Option<String> {
    let (got_shape, got) = match npy::read_f32(path) {
        Ok(v) => v,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    if got_shape != shape {
        return Some(format!("shape {got_shape:?}, want {shape:?}"));
    }
    let mut worst: Option<(usize, f64, f64)> = None;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let g = *g as f64;
        let ok = (g - w).abs() <= ATOL + RTOL * w.abs();
        if !ok && worst.is_none_or(|(_, wg, ww)| (g - w).abs() > (wg - ww).abs()) {
            worst = Some((k, g, *w));
        }
    }
    worst.map(|(k, g, w)| {
        format!(
            "element {k}: got {g}, want {w} (|diff| {:.3e})",
            (g - w).abs()
        )
    })
}

#[test]
fn every_form_matches_the_reference_at_o0_and_optimized() {
    let mut failures = Vec::new();
    let specs = specs();
    for (i, spec) in specs.into_iter().enumerate() {
        let case = Case::new(spec);
        let s = &case.spec;
        let want = evaluate(&case.m, &case.x(), s.steps, s.batch);
        for form in forms(i) {
            let model = case.write(form);
            for level in ["-O0", "-O1"] {
                let out = case.dir.path().join(format!("out_{}_{level}", form.name()));
                let x_arg = format!("X={}", case.x_path.display());
                let o = hlstmc(&[
                    "run",
                    level,
                    model.to_str().unwrap(),
                    "-i",
                    &x_arg,
                    "-o",
                    out.to_str().unwrap(),
                ]);
                let tag = format!("{} {} {level}", case.describe(), form.name());
                if !o.status.success() {
                    failures.push(format!(
                        "{tag}: hlstmc run failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                    continue;
                }
                let checks = [
                    ("Y", vec![s.steps, s.batch, s.hidden], &want.y),
                    ("Y_h", vec![s.batch, s.hidden], &want.y_h),
                ];
                for (name, shape, want) in checks {
                    if let Some(e) = compare(&out.join(format!("{name}.npy")), &shape, want) {
                        failures.push(format!("{tag}: output {name}: {e}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures (write a spec's models, input and reference outputs with \
         `cargo run -p hlstm-bench --bin gen_hlstm -- SEED DIR`):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn inspect_optimized(model: &Path) -> Result<serde_json::Value, String> {
    let o = hlstmc(&["inspect", "--optimized", "--json", model.to_str().unwrap()]);
    if !o.status.success() {
        return Err(format!(
            "hlstmc inspect --optimized failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    serde_json::from_slice(&o.stdout).map_err(|e| format!("inspect printed no JSON: {e}"))
}

fn macs_of(j: &serde_json::Value) -> f64 {
    j["macs_per_step_nonzero"]
        .as_f64()
        .expect("macs_per_step_nonzero is a number")
}

#[test]
fn scan_form_costs_the_independent_live_count() {
    let mut failures = Vec::new();
    for (i, spec) in specs().into_iter().enumerate() {
        let case = Case::new(spec);
        let count = live_macs(&case.m);
        let form = forms(i)[0];
        let tag = format!("{} {}", case.describe(), form.name());
        match inspect_optimized(&case.write(form)) {
            Err(e) => failures.push(format!("{tag}: {e}")),
            Ok(j) => {
                let got = macs_of(&j);
                if got != count.live_macs as f64 {
                    failures.push(format!(
                        "{tag}: macs_per_step_nonzero {got}, independent count {} \
                         (nonzero weights {}, constant neurons {}, dead neurons {}, \
                         per gate and layer {:?})",
                        count.live_macs,
                        count.nonzero_weights,
                        count.constant_neurons,
                        count.dead_neurons,
                        count.per_layer
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures (write a spec's models, input and reference outputs with \
         `cargo run -p hlstm-bench --bin gen_hlstm -- SEED DIR`):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unrolled_and_gemm_forms_optimize_like_the_scan_form() {
    let mut failures = Vec::new();
    for (i, mut spec) in specs().into_iter().enumerate() {
        // One unrolled step is no loop to re-roll, and with h_0 = c_0 = 0 it legitimately
        // needs less than a step of the loop (no f gate, no h part of the first layers).
        spec.steps = spec.steps.max(2);
        let case = Case::new(spec);
        let count = live_macs(&case.m).live_macs as f64;
        let [scan, unrolled, gemm] = forms(i);
        let reference = match inspect_optimized(&case.write(scan)) {
            Ok(j) => j,
            Err(e) => {
                failures.push(format!("{} {}: {e}", case.describe(), scan.name()));
                continue;
            }
        };
        for form in [unrolled, gemm] {
            let tag = format!("{} {}", case.describe(), form.name());
            let j = match inspect_optimized(&case.write(form)) {
                Ok(j) => j,
                Err(e) => {
                    failures.push(format!("{tag}: {e}"));
                    continue;
                }
            };
            if macs_of(&j) != count {
                failures.push(format!(
                    "{tag}: macs_per_step_nonzero {}, independent count {count}",
                    macs_of(&j)
                ));
            }
            for key in ["loop_body_ops", "params_nonzero"] {
                if j[key] != reference[key] {
                    failures.push(format!(
                        "{tag}: {key} {}, Scan form {}",
                        j[key], reference[key]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures (write a spec's models, input and reference outputs with \
         `cargo run -p hlstm-bench --bin gen_hlstm -- SEED DIR`):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The independent count against tests/fixtures/README.md.

fn fixture(name: &str) -> ModelProto {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
        .join("model.onnx");
    ModelProto::parse_from_bytes(&std::fs::read(&p).expect("reads the fixture")).expect("parses")
}

fn floats(t: &TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type, 1, "{}: f32", t.name);
    if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    }
}

/// Every f32 initializer of the graph and of the bodies of its nodes, by name: (dims, data).
fn initializers(g: &GraphProto, out: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    for t in &g.initializer {
        if t.data_type == 1 {
            let dims = t.dims.iter().map(|&d| d as usize).collect();
            out.insert(t.name.clone(), (dims, floats(t)));
        }
    }
    for n in &g.node {
        for a in &n.attribute {
            if let Some(b) = a.g.as_ref() {
                initializers(b, out);
            }
        }
    }
}

fn weights_of(name: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let m = fixture(name);
    let mut w = BTreeMap::new();
    initializers(&m.graph, &mut w);
    w
}

fn transpose(rows: usize, cols: usize, v: &[f32]) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = v[i * cols + j];
        }
    }
    t
}

/// Gate by gate MatMul weights named `g{k}_W{l}` `[in, out]` and `g{k}_b{l}`.
fn gate_by_gate(name: &str, inputs: usize, hidden: usize) -> Hlstm {
    let w = weights_of(name);
    let gates = std::array::from_fn(|k| {
        let mut layers = Vec::new();
        for l in 0.. {
            let Some((dims, data)) = w.get(&format!("g{k}_W{l}")) else {
                break;
            };
            let b = w[&format!("g{k}_b{l}")].1.clone();
            layers.push(Layer::new(dims[0], dims[1], data.clone(), b));
        }
        layers
    });
    Hlstm::new(inputs, hidden, gates)
}

/// The H64 Scan fixtures: fused first layers `W1` `[X+H, 4*Hw]` and `W2` `[4, Hw, H]`.
fn fused_h64(name: &str) -> Hlstm {
    let w = weights_of(name);
    let (d1, w1) = &w["W1"];
    let b1 = &w["b1"].1;
    let (d2, w2) = &w["W2"];
    let b2 = &w["b2"].1;
    let (nz, hw, nh) = (d1[0], d1[1] / 4, d2[2]);
    let gates = std::array::from_fn(|k| {
        let first: Vec<f32> = (0..nz)
            .flat_map(|i| (0..hw).map(move |j| (i, j)))
            .map(|(i, j)| w1[i * 4 * hw + k * hw + j])
            .collect();
        let second = w2[k * hw * nh..(k + 1) * hw * nh].to_vec();
        vec![
            Layer::new(nz, hw, first, b1[k * hw..(k + 1) * hw].to_vec()),
            Layer::new(hw, nh, second, b2[k * nh..(k + 1) * nh].to_vec()),
        ]
    });
    Hlstm::new(nz - nh, nh, gates)
}

/// torch exports: `gates.{k}.{2l}.weight` `[out, in]`.
fn torch_pergate(name: &str, inputs: usize, hidden: usize) -> Hlstm {
    let w = weights_of(name);
    let gates = std::array::from_fn(|k| {
        let mut layers = Vec::new();
        for l in 0.. {
            let Some((dims, data)) = w.get(&format!("gates.{k}.{}.weight", 2 * l)) else {
                break;
            };
            let b = w[&format!("gates.{k}.{}.bias", 2 * l)].1.clone();
            let (out, inp) = (dims[0], dims[1]);
            layers.push(Layer::new(inp, out, transpose(out, inp, data), b));
        }
        layers
    });
    Hlstm::new(inputs, hidden, gates)
}

#[test]
fn independent_count_reproduces_the_fixture_table() {
    // (fixture, weights, nonzero weights, multiply-adds left) from tests/fixtures/README.md.
    let cases: Vec<(&str, Hlstm, usize, usize)> = vec![
        (
            "hlstm_scan_H64_X32_T8",
            fused_h64("hlstm_scan_H64_X32_T8"),
            40960,
            40960,
        ),
        (
            "hlstm_scan_H64_X32_T8_sp90",
            fused_h64("hlstm_scan_H64_X32_T8_sp90"),
            4096,
            4071,
        ),
        (
            "hlstm_scan_H64_X32_T8_sp97",
            fused_h64("hlstm_scan_H64_X32_T8_sp97"),
            1228,
            1068,
        ),
        (
            "torch_hlstm_pergate_H64_X32_T8_sp90",
            torch_pergate("torch_hlstm_pergate_H64_X32_T8_sp90", 32, 64),
            4096,
            4071,
        ),
        (
            "torch_hlstm_pergate_H64_X32_T8_sp97",
            torch_pergate("torch_hlstm_pergate_H64_X32_T8_sp97", 32, 64),
            1228,
            1068,
        ),
        (
            "hlstm3_scan_X16_H32_W48_T7_dead",
            gate_by_gate("hlstm3_scan_X16_H32_W48_T7_dead", 16, 32),
            4177,
            3233,
        ),
        (
            "torch_hlstm3_X16_H32_W48_T7_dead",
            torch_pergate("torch_hlstm3_X16_H32_W48_T7_dead", 16, 32),
            4177,
            3233,
        ),
        (
            "hlstm_scan_X24_H32_T6_unused_inputs",
            gate_by_gate("hlstm_scan_X24_H32_T6_unused_inputs", 24, 32),
            4112,
            4112,
        ),
        (
            "hlstm_scan_X16_H24_T5_batch3",
            gate_by_gate("hlstm_scan_X16_H24_T5_batch3", 16, 24),
            1844,
            1844,
        ),
    ];
    for (name, m, nonzero, left) in cases {
        let c = live_macs(&m);
        assert_eq!(
            (c.nonzero_weights, c.live_macs),
            (nonzero, left),
            "{name}: {c:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The generator itself.

#[test]
fn generator_honours_its_spec() {
    for spec in specs() {
        let m = generate(&spec);
        assert_eq!(m, generate(&spec), "deterministic in the seed");
        assert_eq!(m.widths(), spec.widths);
        // Unused inputs: at least that many x rows are zero in every gate's first layer.
        let unused = (0..spec.inputs)
            .filter(|&i| {
                m.gates
                    .iter()
                    .all(|l| (0..l[0].n_out).all(|j| l[0].at(i, j) == 0.0))
            })
            .count();
        assert!(unused >= spec.unused_inputs, "{spec:?}: {unused} unused");
        // Pruning leaves at most the density's share (cuts only remove, cascades add at most
        // one weight per cut).
        let (dense, nonzero) = m.weight_counts();
        let bound = (spec.density * dense as f64).round() as usize + 12 + spec.cut_neurons;
        assert!(nonzero <= bound, "{spec:?}: {nonzero} of {dense} nonzero");
        let c = live_macs(&m);
        assert!(c.live_macs <= c.nonzero_weights);
    }
}

#[test]
fn cut_neurons_cascade_across_layers() {
    // Three hidden layers, many cuts: dead-neuron removal has work on more than one layer.
    let mut spec = HlstmSpec::dense(6, 8, 2, 1, &[10, 10, 10]);
    spec.density = 0.6;
    spec.cut_neurons = 12;
    spec.seed = 7;
    let m = generate(&spec);
    let c = live_macs(&m);
    assert!(c.constant_neurons > 0 && c.dead_neurons > 0, "{c:?}");
    assert!(c.live_macs < c.nonzero_weights, "{c:?}");
}
