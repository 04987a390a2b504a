//! What the default optimization pipeline does to the fixture models, through the CLI:
//!
//! - `inspect --optimized --json` reports `macs_per_step_nonzero` equal to the independent count
//!   in tests/fixtures/README.md (no multiply-add left on a zero weight or a dead neuron);
//! - the unrolled and torch-exported H-LSTMs optimize to what their Scan form does (equal
//!   `loop_body_ops`, multiply-adds and nonzero parameters);
//! - a dense LSTM keeps one matmul, on h, inside its time loop, its x projection outside; the
//!   first layers of a dense H-LSTM's gate networks are one matmul on h inside the loop, their
//!   x part outside, also when the gates arrive as separate networks (gate-by-gate Scan forms);
//! - input features no gate reads leave the projection (`hlstm_scan_X24_H32_T6_unused_inputs`);
//! - every saturation run on every fixture stops by saturation or the iteration limit, never by
//!   the time or node limit (so results do not depend on machine load);
//! - each named rule of the rule table that applies to a fixture fires there (`--stats` counts)
//!   and the saturation pass changes that fixture;
//! - `run --verify-each --test-data` passes on every fixture (the verifier and the interpreter
//!   after every pass).
//!
//! Reference outputs after the default pipeline are checked in tests/fixtures_interp.rs.

mod common;

use common::{hlstmc, stderr, stdout};
use hlstm_ir::text::{WeightStore, parse_with_weights, side_file_path};
use hlstm_ir::{Graph, Op, Value};
use hlstm_passes::saturate::rules::rule_table;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The model file of a fixture in models/ (or `extra/NAME` for one in extra/).
fn model(name: &str) -> String {
    let rel = if name.contains('/') {
        name.to_string()
    } else {
        format!("models/{name}")
    };
    fixtures()
        .join(rel)
        .join("model.onnx")
        .display()
        .to_string()
}

/// Every fixture model folder in models/ and extra/, as `models/NAME` or `extra/NAME`.
fn all_fixtures() -> Vec<String> {
    let mut out = Vec::new();
    for folder in ["models", "extra"] {
        let mut names: Vec<String> = std::fs::read_dir(fixtures().join(folder))
            .expect("fixture folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.join("model.onnx").is_file())
            .map(|p| format!("{folder}/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        names.sort();
        out.extend(names);
    }
    assert!(
        out.len() >= 34,
        "expected at least 34 fixture models, found {}",
        out.len()
    );
    out
}

fn ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

// ---------------------------------------------------------------------------------------------
// inspect --optimized --json

/// What `inspect --optimized --json` reports that these tests compare.
#[derive(Debug, PartialEq)]
struct Summary {
    macs_nonzero: f64,
    params_nonzero: f64,
    loop_body_ops: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
}

fn counts(j: &Json) -> BTreeMap<String, u64> {
    j.as_object()
        .expect("an op count object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect()
}

fn inspect_optimized(name: &str) -> Summary {
    let o = hlstmc(&["inspect", "--optimized", "--json", &model(name)]);
    ok(&format!("inspect --optimized {name}"), &o);
    let j: Json = serde_json::from_str(&stdout(&o)).expect("inspect --json prints JSON");
    let num = |k: &str| {
        j[k].as_f64()
            .unwrap_or_else(|| panic!("{name}: no number '{k}' in {j}"))
    };
    Summary {
        macs_nonzero: num("macs_per_step_nonzero"),
        params_nonzero: num("params_nonzero"),
        loop_body_ops: counts(&j["loop_body_ops"]),
        ops: counts(&j["ops"]),
    }
}

/// Expected `macs_per_step_nonzero` after optimization, from tests/fixtures/README.md.
const SCAN_AND_LSTM_FORMS: &[(&str, f64)] = &[
    ("hlstm_scan_H64_X32_T8", 40960.0),
    ("hlstm_scan_H64_X32_T8_sp90", 4071.0),
    ("hlstm_scan_H64_X32_T8_sp97", 1068.0),
    ("hlstm3_scan_X16_H32_W48_T7_dead", 3233.0),
    ("hlstm_scan_X24_H32_T6_unused_inputs", 4112.0),
    ("hlstm_scan_X16_H24_T5_batch3", 1844.0),
    ("lstm_std_H64_X32_T8", 24576.0),
    ("lstm_std_H64_X32_T8_sp90", 2460.0),
    ("lstm_std_H64_X32_T8_sp97", 736.0),
    ("lstm_std_X16_H24_T5_batch3", 3840.0),
    ("torch_lstm_H64_X32_T8", 24576.0),
    ("torch_lstm_H64_X32_T8_dynamo", 24576.0),
];

/// The unrolled and torch-exported H-LSTMs (same table).
const UNROLLED_FORMS: &[(&str, f64)] = &[
    ("hlstm_unroll_H64_X32_T8", 40960.0),
    ("hlstm_unroll_H64_X32_T8_sp90", 4071.0),
    ("hlstm_unroll_H64_X32_T8_sp97", 1068.0),
    ("torch_hlstm_fused_H64_X32_T8", 40960.0),
    ("torch_hlstm_fused_H64_X32_T8_dynamo", 40960.0),
    ("torch_hlstm_pergate_H64_X32_T8", 40960.0),
    ("torch_hlstm_pergate_H64_X32_T8_dynamo", 40960.0),
    ("torch_hlstm_pergate_H64_X32_T8_sp90", 4071.0),
    ("torch_hlstm_pergate_H64_X32_T8_sp90_dynamo", 4071.0),
    ("torch_hlstm_pergate_H64_X32_T8_sp97", 1068.0),
    ("torch_hlstm_pergate_H64_X32_T8_sp97_dynamo", 1068.0),
    ("torch_hlstm3_X16_H32_W48_T7_dead", 3233.0),
];

/// Forms of the same model: the first is the Scan form.
const SAME_MODEL: &[&[&str]] = &[
    &[
        "hlstm_scan_H64_X32_T8",
        "hlstm_unroll_H64_X32_T8",
        "torch_hlstm_fused_H64_X32_T8",
        "torch_hlstm_fused_H64_X32_T8_dynamo",
        "torch_hlstm_pergate_H64_X32_T8",
        "torch_hlstm_pergate_H64_X32_T8_dynamo",
    ],
    &[
        "hlstm_scan_H64_X32_T8_sp90",
        "hlstm_unroll_H64_X32_T8_sp90",
        "torch_hlstm_pergate_H64_X32_T8_sp90",
        "torch_hlstm_pergate_H64_X32_T8_sp90_dynamo",
    ],
    &[
        "hlstm_scan_H64_X32_T8_sp97",
        "hlstm_unroll_H64_X32_T8_sp97",
        "torch_hlstm_pergate_H64_X32_T8_sp97",
        "torch_hlstm_pergate_H64_X32_T8_sp97_dynamo",
    ],
    &[
        "hlstm3_scan_X16_H32_W48_T7_dead",
        "torch_hlstm3_X16_H32_W48_T7_dead",
    ],
];

/// Mismatches between the table and what `inspect --optimized` reports.
fn macs_mismatches(table: &[(&str, f64)]) -> Vec<String> {
    table
        .iter()
        .filter_map(|&(name, want)| {
            let got = inspect_optimized(name).macs_nonzero;
            ((got - want).abs() > 1e-6).then(|| format!("{name}: {got}, expected {want}"))
        })
        .collect()
}

#[test]
fn scan_and_lstm_forms_reach_the_fixture_table_macs() {
    let bad = macs_mismatches(SCAN_AND_LSTM_FORMS);
    assert!(
        bad.is_empty(),
        "macs_per_step_nonzero after the default pipeline:\n{}",
        bad.join("\n")
    );
}

#[test]
fn unrolled_forms_match_the_scan_form() {
    let mut bad = macs_mismatches(UNROLLED_FORMS);
    for group in SAME_MODEL {
        let scan = inspect_optimized(group[0]);
        for &other in &group[1..] {
            let s = inspect_optimized(other);
            if s.loop_body_ops != scan.loop_body_ops {
                bad.push(format!(
                    "{other}: loop_body_ops {:?}, the Scan form {} has {:?}",
                    s.loop_body_ops, group[0], scan.loop_body_ops
                ));
            }
            if (s.macs_nonzero - scan.macs_nonzero).abs() > 1e-6 {
                bad.push(format!(
                    "{other}: macs_per_step_nonzero {}, the Scan form {} has {}",
                    s.macs_nonzero, group[0], scan.macs_nonzero
                ));
            }
            if s.params_nonzero != scan.params_nonzero {
                bad.push(format!(
                    "{other}: params_nonzero {}, the Scan form {} has {}",
                    s.params_nonzero, group[0], scan.params_nonzero
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The optimized graph itself (`opt -o FILE`, parsed back)

fn optimized_graph(name: &str) -> Graph {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("opt.hir");
    let o = hlstmc(&["opt", &model(name), "-o", &out.display().to_string()]);
    ok(&format!("opt {name}"), &o);
    let text = std::fs::read_to_string(&out).expect("opt -o writes the IR");
    let store = WeightStore::load(&side_file_path(&out)).expect("opt -o writes the weights");
    parse_with_weights(&text, &store).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The nodes of one op kind, as their first results (the root crate does not name petgraph's
/// index type).
fn nodes_of(g: &Graph, kind: &str) -> Vec<Value> {
    g.nodes
        .node_indices()
        .filter(|&n| g.nodes[n].op.kind() == kind)
        .map(|node| Value { node, slot: 0 })
        .collect()
}

/// The shape of a matmul's right operand when it is a constant.
fn const_weight(g: &Graph, n: Value) -> Option<Vec<usize>> {
    let rhs = g.operands(n.node).get(1).copied().flatten()?;
    g.constant(rhs).map(|c| c.value.shape().to_vec())
}

/// The single recurrence of a graph, with its body.
fn the_recurrence(g: &Graph, name: &str) -> (Value, hlstm_ir::Recurrence) {
    let recs = nodes_of(g, "recurrence");
    assert_eq!(recs.len(), 1, "{name}: expected one recurrence");
    match &g.nodes[recs[0].node].op {
        Op::Recurrence(r) => (recs[0], r.clone()),
        _ => unreachable!(),
    }
}

/// The body input that is the hidden state h: the carried state whose next value is also the
/// per-step output.
fn hidden_state(r: &hlstm_ir::Recurrence, name: &str) -> Value {
    let b = &r.body;
    let nc = r.num_carried;
    let i = (0..nc)
        .find(|&i| b.outputs[nc..].iter().any(|(_, v)| *v == b.outputs[i].1))
        .unwrap_or_else(|| panic!("{name}: no carried state is also the step output"));
    Value {
        node: b.inputs[i],
        slot: 0,
    }
}

/// Matmuls of `g` whose left operand is `v`.
fn matmuls_on(g: &Graph, v: Value) -> Vec<Value> {
    nodes_of(g, "matmul")
        .into_iter()
        .filter(|n| g.operands(n.node).first().copied().flatten() == Some(v))
        .collect()
}

/// The matmuls outside the loop that produce a sequence the recurrence scans, with the shapes
/// of their constant weights: the hoisted input projections.
fn hoisted_projections(g: &Graph, rec: Value, r: &hlstm_ir::Recurrence) -> Vec<Vec<usize>> {
    let operands = g.operands(rec.node);
    operands[r.num_carried..r.num_carried + r.num_scanned]
        .iter()
        .flatten()
        .filter(|v| g.nodes[v.node].op.kind() == "matmul")
        .filter_map(|v| const_weight(g, *v))
        .collect()
}

/// (fixture, input features X, hidden size H) of the ONNX-LSTM-op forms.
const LSTMS: &[(&str, usize, usize)] = &[
    ("lstm_std_H64_X32_T8", 32, 64),
    ("lstm_std_H64_X32_T8_sp90", 32, 64),
    ("lstm_std_H64_X32_T8_sp97", 32, 64),
    ("lstm_std_X16_H24_T5_batch3", 16, 24),
    ("torch_lstm_H64_X32_T8", 32, 64),
    ("torch_lstm_H64_X32_T8_dynamo", 32, 64),
];

#[test]
fn lstm_keeps_one_matmul_on_h_in_the_loop_and_projects_x_outside() {
    for &(name, x, h) in LSTMS {
        let s = inspect_optimized(name);
        let inside = s.loop_body_ops.get("matmul").copied().unwrap_or(0);
        let all = s.ops.get("matmul").copied().unwrap_or(0);
        assert_eq!(
            inside, 1,
            "{name}: loop_body_ops {:?} should hold exactly one matmul",
            s.loop_body_ops
        );
        assert!(
            all >= 2,
            "{name}: ops {:?} should hold a matmul outside the loop (the x projection)",
            s.ops
        );

        let g = optimized_graph(name);
        let (rec, r) = the_recurrence(&g, name);
        let hv = hidden_state(&r, name);
        let on_h = matmuls_on(&r.body, hv);
        assert_eq!(on_h.len(), 1, "{name}: the loop's matmul should read h");
        assert_eq!(
            const_weight(&r.body, on_h[0]),
            Some(vec![h, 4 * h]),
            "{name}: the recurrent weight of all four gates"
        );
        assert_eq!(
            hoisted_projections(&g, rec, &r),
            vec![vec![x, 4 * h]],
            "{name}: one x projection of all four gates over all steps, outside the loop"
        );
    }
}

#[test]
fn dense_hlstm_first_layers_are_one_matmul_on_h_with_the_x_part_outside() {
    // The Scan form holds the four gates' first layers as one [X + H, 4·64] weight and the
    // second layers as one batched [4, 64, 64] weight. The second layers may stay batched or
    // become one matmul per gate; the first layers must be one matmul on h in the loop and one
    // x projection outside. The pruned forms keep the same structure.
    for name in [
        "hlstm_scan_H64_X32_T8",
        "hlstm_scan_H64_X32_T8_sp90",
        "hlstm_scan_H64_X32_T8_sp97",
    ] {
        let s = inspect_optimized(name);
        let inside = s.loop_body_ops.get("matmul").copied().unwrap_or(0);
        let all = s.ops.get("matmul").copied().unwrap_or(0);
        assert_eq!(
            all - inside,
            1,
            "{name}: ops {:?}, loop_body_ops {:?}: one matmul outside the loop (the x part of \
             the first layers)",
            s.ops,
            s.loop_body_ops
        );

        let g = optimized_graph(name);
        let (rec, r) = the_recurrence(&g, name);
        let hv = hidden_state(&r, name);
        let on_h = matmuls_on(&r.body, hv);
        assert_eq!(on_h.len(), 1, "{name}: one matmul on h for the four gates");
        assert_eq!(
            const_weight(&r.body, on_h[0]),
            Some(vec![64, 256]),
            "{name}: the h part of the four gates' first layers"
        );
        // Every other matmul in the loop is a second layer: a constant weight, 4·64·64 weights
        // in all (one [4, 64, 64] or four [64, 64]).
        let second: Vec<Option<Vec<usize>>> = nodes_of(&r.body, "matmul")
            .into_iter()
            .filter(|n| *n != on_h[0])
            .map(|n| const_weight(&r.body, n))
            .collect();
        let elements: Option<usize> = second
            .iter()
            .map(|w| w.as_ref().map(|d| d.iter().product::<usize>()))
            .sum();
        assert_eq!(
            elements,
            Some(4 * 64 * 64),
            "{name}: the loop's other matmuls {second:?} should be the four second layers"
        );
        assert_eq!(
            inside as usize,
            1 + second.len(),
            "{name}: loop_body_ops {:?}",
            s.loop_body_ops
        );
        assert_eq!(
            hoisted_projections(&g, rec, &r),
            vec![vec![32, 256]],
            "{name}: the x part of the four first layers, over all steps, outside the loop"
        );
    }
}

/// Gate fusion where the four gate networks arrive as separate matmuls (the gate-by-gate Scan
/// forms): their first layers' h parts become one matmul in the loop, their x parts one
/// projection outside.
#[test]
fn per_gate_first_layers_are_fused() {
    for name in [
        "hlstm_scan_X16_H24_T5_batch3",
        "hlstm_scan_X24_H32_T6_unused_inputs",
        "hlstm3_scan_X16_H32_W48_T7_dead",
    ] {
        let g = optimized_graph(name);
        let (rec, r) = the_recurrence(&g, name);
        let hv = hidden_state(&r, name);
        assert_eq!(
            matmuls_on(&r.body, hv).len(),
            1,
            "{name}: the four gates' first layers should read h in one matmul"
        );
        assert_eq!(
            hoisted_projections(&g, rec, &r).len(),
            1,
            "{name}: the four gates' x parts should be one projection outside the loop"
        );
    }
}

/// Unused inputs: input features with no outgoing weight in any gate leave the projection.
/// hlstm_scan_X24_H32_T6_unused_inputs has 8 such features of 24: the projection reads 16, and
/// no matmul weight keeps an all-zero row.
#[test]
fn unused_input_features_leave_the_projection() {
    let name = "hlstm_scan_X24_H32_T6_unused_inputs";
    let g = optimized_graph(name);
    let (rec, r) = the_recurrence(&g, name);
    assert_eq!(
        hoisted_projections(&g, rec, &r),
        vec![vec![16, 4 * 32]],
        "{name}: one projection of the 16 used features for the four gates"
    );
    let mut bad = Vec::new();
    g.walk(&mut |gr, n, _| {
        if gr.nodes[n].op.kind() != "matmul" {
            return;
        }
        let Some(rhs) = gr.operands(n).get(1).copied().flatten() else {
            return;
        };
        let Some(c) = gr.constant(rhs) else { return };
        let Some(w) = c.value.as_f32() else { return };
        if w.ndim() != 2 {
            return;
        }
        let zero_rows = w
            .outer_iter()
            .filter(|row| row.iter().all(|v| *v == 0.0))
            .count();
        if zero_rows > 0 {
            bad.push(format!(
                "{}: weight {:?} has {zero_rows} all-zero rows",
                gr.nodes[n].name,
                w.shape()
            ));
        }
    });
    assert!(bad.is_empty(), "{name}:\n{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// opt --stats

/// One pass's entry in the `--stats` table.
#[derive(Debug, Default)]
struct PassStats {
    name: String,
    /// (before, after) of nodes, weights, nonzeros, multiply-adds.
    row: Vec<(String, String)>,
    counters: BTreeMap<String, usize>,
    notes: Vec<String>,
}

fn parse_stats(text: &str) -> Vec<PassStats> {
    let mut passes: Vec<PassStats> = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("Pass statistics") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if let Some(entry) = line.strip_prefix("      ") {
            let p = passes.last_mut().expect("a pass row before its counters");
            match entry
                .rsplit_once(": ")
                .and_then(|(k, v)| v.parse::<usize>().ok().map(|v| (k, v)))
            {
                Some((k, v)) => {
                    p.counters.insert(k.to_string(), v);
                }
                None => p.notes.push(entry.to_string()),
            }
        } else if let Some(row) = line.strip_prefix("  ") {
            let mut words = row.split_whitespace();
            let name = words.next().unwrap_or_default();
            if name == "pass" {
                continue;
            }
            let row = words
                .map(|w| {
                    let (a, b) = w.split_once("->").expect("before->after");
                    (a.to_string(), b.to_string())
                })
                .collect();
            passes.push(PassStats {
                name: name.to_string(),
                row,
                ..Default::default()
            });
        } else {
            in_table = false;
        }
    }
    passes
}

fn opt_stats(name: &str, pipeline: Option<&str>) -> Vec<PassStats> {
    let m = model(name);
    let mut args = vec!["opt", m.as_str(), "--stats"];
    if let Some(p) = pipeline {
        args.extend(["--passes", p]);
    }
    let o = hlstmc(&args);
    ok(&format!("opt --stats {name}"), &o);
    let stats = parse_stats(&stderr(&o));
    assert!(
        stats.iter().any(|p| p.name == "saturate"),
        "{name}: no saturate entry in --stats:\n{}",
        stderr(&o)
    );
    stats
}

/// The stop reason of a saturation note, "<scope>: <reason> after N iterations, ...".
fn stop_reason(note: &str) -> Option<(&str, &str)> {
    let (head, tail) = note.rsplit_once(" after ")?;
    if !tail.contains(" iterations, ") {
        return None;
    }
    head.rsplit_once(": ")
}

#[test]
fn saturation_stops_by_saturation_or_the_iteration_limit() {
    let mut bad = Vec::new();
    for name in all_fixtures() {
        let stats = opt_stats(&name, None);
        let sat = stats
            .iter()
            .find(|p| p.name == "saturate")
            .expect("saturate");
        let runs: Vec<(&str, &str)> = sat.notes.iter().filter_map(|n| stop_reason(n)).collect();
        if runs.is_empty() {
            bad.push(format!(
                "{name}: no saturation run reported: {:?}",
                sat.notes
            ));
        }
        for (scope, reason) in runs {
            if !(reason == "saturated" || reason.starts_with("iteration limit")) {
                bad.push(format!("{name}: {scope} stopped by {reason}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The part of the default pipeline before saturation, without re-rolling: some identities
/// (x + 0, x * 0) only appear in the unrolled exports, where step 0 reads the constant zero
/// state; once re-rolled, that state is the recurrence's initial value and nothing folds.
const UNROLLED_PIPELINE: &str = "canonicalize,fold-constants,simplify,saturate";

/// (rule, fixture, pipeline: None for the default) for each rule that applies to a fixture.
const RULES_ON_FIXTURES: &[(&str, &str, Option<&str>)] = &[
    ("split-concat-matmul", "hlstm_scan_H64_X32_T8", None),
    (
        "dead-neuron-in/relu",
        "hlstm3_scan_X16_H32_W48_T7_dead",
        None,
    ),
    (
        "dead-neuron-out/relu",
        "hlstm3_scan_X16_H32_W48_T7_dead",
        None,
    ),
    (
        "dead-neuron-in/relu",
        "torch_hlstm_pergate_H64_X32_T8_sp97",
        None,
    ),
    (
        "dead-neuron-out/relu",
        "torch_hlstm_pergate_H64_X32_T8_sp97",
        None,
    ),
    (
        "dead-neuron-in-batched/relu",
        "hlstm_scan_H64_X32_T8_sp97",
        None,
    ),
    (
        "dead-neuron-out-batched/relu",
        "hlstm_scan_H64_X32_T8_sp97",
        None,
    ),
    (
        "dead-neuron-out-batched/relu",
        "hlstm_scan_H64_X32_T8_sp90",
        None,
    ),
    ("add-constants", "hlstm3_scan_X16_H32_W48_T7_dead", None),
    ("add-constants", "hlstm_scan_H64_X32_T8_sp97", None),
    ("mul-one", "torch_hlstm_fused_H64_X32_T8", None),
    (
        "add-zero",
        "hlstm_unroll_H64_X32_T8",
        Some(UNROLLED_PIPELINE),
    ),
    (
        "add-zero-left",
        "hlstm_unroll_H64_X32_T8",
        Some(UNROLLED_PIPELINE),
    ),
    (
        "mul-zero",
        "hlstm_unroll_H64_X32_T8",
        Some(UNROLLED_PIPELINE),
    ),
];

/// Rules that fire on no fixture (checked on random tensors in passes/tests/rules.rs):
///
/// - no fixture has an all-zero weight block as a matmul operand of its own: the weights are
///   pruned element by element (whole pruned neurons are the dead-neuron rules' business), and
///   in the unrolled forms the zero initial state times a constant weight is folded as a
///   constant before a matmul rule sees it (`matmul-zero-weight`, `matmul-zero-left`);
/// - no fixture computes `0 * x`, `x - 0` or `1 * x` (`mul-zero-left`, `sub-zero`,
///   `mul-one-left`), nor concatenates [x, h] on axis -1 (`split-concat-matmul-neg`);
/// - every fixture's hidden layers use ReLU (the dead-neuron rules for sigmoid, tanh and linear
///   layers).
const RULES_ON_NO_FIXTURE: &[&str] = &[
    "matmul-zero-weight",
    "matmul-zero-left",
    "mul-zero-left",
    "sub-zero",
    "mul-one-left",
    "split-concat-matmul-neg",
    "dead-neuron-in/sigmoid",
    "dead-neuron-in/tanh",
    "dead-neuron-in/linear",
    "dead-neuron-out/sigmoid",
    "dead-neuron-out/tanh",
    "dead-neuron-out/linear",
    "dead-neuron-in-batched/sigmoid",
    "dead-neuron-in-batched/tanh",
    "dead-neuron-in-batched/linear",
    "dead-neuron-out-batched/sigmoid",
    "dead-neuron-out-batched/tanh",
    "dead-neuron-out-batched/linear",
];

#[test]
fn every_rule_is_placed_on_a_fixture_or_listed_as_firing_on_none() {
    let mut placed: Vec<&str> = RULES_ON_FIXTURES
        .iter()
        .map(|(r, _, _)| *r)
        .chain(RULES_ON_NO_FIXTURE.iter().copied())
        .collect();
    placed.sort();
    placed.dedup();
    let mut table: Vec<String> = rule_table().into_iter().map(|r| r.name).collect();
    table.sort();
    assert_eq!(
        placed, table,
        "RULES_ON_FIXTURES and RULES_ON_NO_FIXTURE together should name every rule of the table"
    );
}

#[test]
fn named_rules_fire_on_their_fixtures() {
    let mut cache: BTreeMap<(&str, Option<&str>), Vec<PassStats>> = BTreeMap::new();
    let mut bad = Vec::new();
    for &(rule, name, pipeline) in RULES_ON_FIXTURES {
        let stats = cache
            .entry((name, pipeline))
            .or_insert_with(|| opt_stats(name, pipeline));
        let sat = stats
            .iter()
            .find(|p| p.name == "saturate")
            .expect("saturate");
        let fired = sat.counters.get(rule).copied().unwrap_or(0);
        if fired == 0 {
            bad.push(format!(
                "{rule} did not fire on {name} (fired: {:?})",
                sat.counters
            ));
        }
        if sat.row.iter().all(|(a, b)| a == b) {
            bad.push(format!("saturation left {name} unchanged: {:?}", sat.row));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// run --verify-each

#[test]
fn every_pass_verifies_and_keeps_the_numbers_on_every_fixture() {
    let mut bad = Vec::new();
    for name in all_fixtures() {
        let dir = fixtures().join(&name);
        let o = hlstmc(&[
            "run",
            "--verify-each",
            &dir.join("model.onnx").display().to_string(),
            "--test-data",
            &dir.join("test_data_set_0").display().to_string(),
        ]);
        if !o.status.success() {
            bad.push(format!("{name}:\n{}{}", stdout(&o), stderr(&o)));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
