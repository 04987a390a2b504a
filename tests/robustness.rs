//! The reader and the interpreter return errors, never panic, on damaged files: flipped bytes,
//! truncation at every offset of a small file, and absurd dimensions.

use hlstm_frontends::onnx::{import_bytes, tensor::read_pb};
use hlstm_ir::Tensor;
use onnx_protobuf::ModelProto;
use proptest::prelude::*;
use protobuf::Message;
use std::path::{Path, PathBuf};

const MODELS: &[&str] = &[
    "onnx-node/test_add",
    "onnx-node/test_slice",
    "onnx-node/test_lstm_with_peepholes",
    "onnx-node/test_scan9_sum",
    "onnx-node/test_gemm_all_attributes",
    "models/hlstm_scan_X16_H24_T5_batch3",
    "models/lstm_std_X16_H24_T5_batch3",
    "models/torch_lstm_H64_X32_T8",
];

/// 3000 cases per property; HLSTMC_FUZZ_CASES asks for more (for a longer local search).
fn cases() -> u32 {
    std::env::var("HLSTMC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn load(rel: &str) -> (Vec<u8>, Vec<Tensor>) {
    let dir = fixture(rel);
    let bytes = std::fs::read(dir.join("model.onnx")).expect("fixture model");
    let mut inputs = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("test_data_set_0/input_{k}.pb"));
        if !p.exists() {
            break;
        }
        inputs.push(read_pb(&p).expect("fixture input").1);
    }
    (bytes, inputs)
}

/// Imports, and runs what imports; any error is fine, a panic fails the test.
fn exercise(bytes: &[u8], inputs: &[Tensor]) {
    if let Ok(g) = import_bytes(bytes, None) {
        let _ = hlstm_ir::interp::run(&g, inputs);
        let _ = hlstm_ir::stats::graph_stats(&g);
    }
}

#[test]
fn truncation_at_every_offset() {
    for rel in [
        "onnx-node/test_add",
        "onnx-node/test_scan9_sum",
        "onnx-node/test_lstm_defaults",
    ] {
        let (bytes, inputs) = load(rel);
        for cut in 0..bytes.len() {
            exercise(&bytes[..cut], &inputs);
        }
        assert!(import_bytes(&bytes, None).is_ok(), "{rel} imports whole");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn flipped_bytes(which in 0..MODELS.len(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let (mut bytes, inputs) = load(MODELS[which]);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        exercise(&bytes, &inputs);
    }

    #[test]
    fn absurd_dims(which in 0..MODELS.len(), pick in any::<prop::sample::Index>(), dim in prop_oneof![
        Just(-1i64), Just(0), Just(i64::MAX), Just(i64::MIN), Just(1 << 40), Just(1 << 31), 1i64..100_000
    ]) {
        let (bytes, inputs) = load(MODELS[which]);
        let mut m = ModelProto::parse_from_bytes(&bytes).expect("fixture parses");
        let g = m.graph.as_mut().expect("graph");
        // Change one dimension of an initializer or a declared input.
        let mut slots: Vec<&mut i64> = g.initializer.iter_mut().flat_map(|t| t.dims.iter_mut()).collect();
        for vi in g.input.iter_mut() {
            if let Some(onnx_protobuf::type_proto::Value::TensorType(tt)) = vi.type_.as_mut().and_then(|t| t.value.as_mut()) {
                if let Some(s) = tt.shape.as_mut() {
                    for d in s.dim.iter_mut() {
                        if let Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v)) = d.value.as_mut() {
                            slots.push(v);
                        }
                    }
                }
            }
        }
        if !slots.is_empty() {
            let i = pick.index(slots.len());
            *slots[i] = dim;
        }
        let bytes = m.write_to_bytes().expect("serializes");
        exercise(&bytes, &inputs);
    }
}
