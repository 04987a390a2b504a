//! The `com.microsoft` ops ONNX Runtime's optimizer writes (docs/contrib-ops.md):
//!
//! - an ORT-optimized H-LSTM (FusedGemm in place of Gemm + ReLU) optimizes to the multiply-add
//!   count of the file it came from (and of tests/fixtures/README.md's table);
//! - hand-written FusedGemm (every activation ONNX Runtime fuses) and FusedMatMul (transA/B,
//!   transBatchA/B, alpha) models in tests/fixtures/contrib match ONNX Runtime's outputs;
//! - a refused contrib op's error names the op, its domain, the node and why; an op of an
//!   unknown domain names the domain; a bad FusedGemm/FusedMatMul names the node and problem.
//!
//! The ORT-optimized H-LSTMs in tests/fixtures/extra run through every engine in the fixture
//! tests (tests/fixtures_interp.rs, tests/jit.rs, tests/compile_c.rs).

mod common;

use common::{f32_tensor, hlstmc, model, node, stderr, stdout, value_info};
use hlstmc::{Model, OptimizeOptions};
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, NodeProto};
use protobuf::Message;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `macs_per_step_nonzero` of a fixture after the default pipeline, via the library.
fn macs_optimized(rel: &str) -> u64 {
    let m = Model::load(fixtures().join(rel).join("model.onnx"))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .optimize(&OptimizeOptions::default())
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    hlstmc::inspect::report(&m, rel)["macs_per_step_nonzero"]
        .as_u64()
        .expect("a count")
}

/// How many nodes of `domain`.`op` the model file holds, bodies included.
fn count_ops(rel: &str, domain: &str, op: &str) -> usize {
    fn walk(g: &GraphProto, domain: &str, op: &str) -> usize {
        g.node
            .iter()
            .map(|n| {
                let here = usize::from(n.domain == domain && n.op_type == op);
                let bodies: usize = n
                    .attribute
                    .iter()
                    .map(|a| {
                        a.g.as_ref().map_or(0, |b| walk(b, domain, op))
                            + a.graphs.iter().map(|b| walk(b, domain, op)).sum::<usize>()
                    })
                    .sum();
                here + bodies
            })
            .sum()
    }
    let bytes = std::fs::read(fixtures().join(rel).join("model.onnx")).expect("fixture");
    let m = ModelProto::parse_from_bytes(&bytes).expect("a model");
    walk(m.graph.as_ref().expect("a graph"), domain, op)
}

#[test]
fn ort_optimized_hlstms_optimize_to_the_multiply_adds_of_their_sources() {
    // (ORT-optimized file, the file it came from, tests/fixtures/README.md's count)
    let pairs = [
        (
            "extra/ort_ext_hlstm_scan_H64_X32_T8_sp97",
            "models/hlstm_scan_H64_X32_T8_sp97",
            1068,
        ),
        (
            "extra/ort_all_torch_hlstm_pergate_H64_X32_T8_sp97",
            "models/torch_hlstm_pergate_H64_X32_T8_sp97",
            1068,
        ),
    ];
    for (ort, source, want) in pairs {
        let fused = count_ops(ort, "com.microsoft", "FusedGemm");
        assert!(
            fused > 0,
            "{ort} holds no FusedGemm: the test tests nothing"
        );
        assert_eq!(
            count_ops(source, "com.microsoft", "FusedGemm"),
            0,
            "{source}"
        );
        let (a, b) = (macs_optimized(ort), macs_optimized(source));
        println!("{ort}: {fused} FusedGemm, {a} multiply-adds per step; {source}: {b}");
        assert_eq!(a, b, "{ort} vs {source}");
        assert_eq!(a, want, "{ort}");
    }
}

#[test]
fn hand_written_contrib_ops_match_onnx_runtime() {
    let dir = fixtures().join("contrib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/contrib")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 2,
        "found {} models in {}",
        dirs.len(),
        dir.display()
    );
    for d in dirs {
        for flags in [&["-O0", "--engine", "interp"][..], &[][..]] {
            let (model, data) = (d.join("model.onnx"), d.join("test_data_set_0"));
            let mut args = vec!["run"];
            args.extend_from_slice(flags);
            let (m, t) = (model.display().to_string(), data.display().to_string());
            args.extend([m.as_str(), "--test-data", t.as_str()]);
            let o = hlstmc(&args);
            assert!(
                o.status.success() && stdout(&o).contains("PASS"),
                "{} {flags:?}:\n{}{}",
                d.display(),
                stdout(&o),
                stderr(&o)
            );
        }
    }
}

fn in_domain(mut n: NodeProto, domain: &str) -> NodeProto {
    n.domain = domain.to_string();
    n
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.s = v.as_bytes().to_vec();
    a.type_ = protobuf::EnumOrUnknown::from_i32(3);
    a
}

fn import_error(nodes: Vec<NodeProto>) -> String {
    let m = model(
        17,
        vec![value_info("X", 1, &[2, 3])],
        vec![value_info("Y", 1, &[])],
        vec![f32_tensor("W", &[3, 4], &[0.5; 12])],
        nodes,
    );
    let bytes = m.write_to_bytes().expect("serializes");
    match Model::from_bytes(&bytes, None) {
        Ok(_) => panic!("the model imported"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn refused_contrib_ops_name_the_op_the_domain_the_node_and_why() {
    let e = import_error(vec![in_domain(
        node("MatMulIntegerToFloat", "q_proj", &["X", "W"], &["Y"]),
        "com.microsoft",
    )]);
    for part in [
        "MatMulIntegerToFloat",
        "com.microsoft",
        "q_proj",
        "quantized",
    ] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
    let e = import_error(vec![in_domain(
        node("ReorderInput", "nchwc0", &["X"], &["Y"]),
        "com.microsoft.nchwc",
    )]);
    for part in [
        "ReorderInput",
        "com.microsoft.nchwc",
        "nchwc0",
        "ORT_ENABLE_EXTENDED",
    ] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
    // An op hlstmc knows in the default domain is still refused in a domain it does not know.
    let e = import_error(vec![in_domain(
        node("Relu", "custom_relu", &["X"], &["Y"]),
        "org.example",
    )]);
    for part in ["Relu", "org.example", "custom_relu"] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
}

#[test]
fn bad_fused_ops_name_the_node_and_the_problem() {
    let mut g = in_domain(
        node("FusedGemm", "fg", &["X", "W"], &["Y"]),
        "com.microsoft",
    );
    g.attribute.push(string_attr("activation", "Gelu"));
    let e = import_error(vec![g]);
    for part in ["fg", "FusedGemm", "activation 'Gelu'"] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
    let mut m = in_domain(
        node("FusedMatMul", "fm", &["X", "W"], &["Y"]),
        "com.microsoft",
    );
    m.attribute.push(common::int_attr("transBatchA", 1));
    let e = import_error(vec![m]);
    for part in ["fm", "FusedMatMul", "transBatchA", "ranks 2 and 2"] {
        assert!(e.contains(part), "'{part}' missing from: {e}");
    }
    let mut s = in_domain(
        node("FusedGemm", "st", &["X", "W"], &["Y"]),
        "com.microsoft",
    );
    s.attribute.push(string_attr("activation", "ScaledTanh"));
    let e = import_error(vec![s]);
    assert!(e.contains("activation_alpha"), "{e}");
}
