//! Models the fuzzer (fuzz/, docs/fuzzing.md) found panicking, shrunk to the node that
//! matters and built here. Each must now be a clear error, or run in every engine.

use hlstmc::{BuildOptions, Engine, Model, OptimizeOptions, Tensor};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType,
};
use protobuf::Message;

fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.float_data = data.to_vec();
    t
}

fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 7;
    t.int64_data = data.to_vec();
    t
}

fn value(name: &str, dims: Option<&[i64]>) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let t = v.type_.mut_or_insert_default().mut_tensor_type();
    t.elem_type = 1;
    if let Some(dims) = dims {
        let shape = t.shape.mut_or_insert_default();
        for &d in dims {
            let mut dim = onnx_protobuf::tensor_shape_proto::Dimension::new();
            dim.set_dim_value(d);
            shape.dim.push(dim);
        }
    }
    v
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], ints: &[(&str, i64)]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = format!("{op}_0");
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    for &(name, i) in ints {
        let mut a = AttributeProto::new();
        a.name = name.into();
        a.i = i;
        a.type_ = AttributeType::INT.into();
        n.attribute.push(a);
    }
    n
}

/// An opset-17 model of `nodes`, with graph inputs `inputs` (f32, given dims) and initializers.
fn model(
    nodes: Vec<NodeProto>,
    inputs: &[(&str, &[i64])],
    inits: Vec<TensorProto>,
    outputs: &[&str],
) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "g".into();
    g.node = nodes;
    g.initializer = inits;
    g.input = inputs.iter().map(|(n, d)| value(n, Some(d))).collect();
    g.output = outputs.iter().map(|n| value(n, None)).collect();
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 17;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m.write_to_bytes().expect("serializes")
}

/// The import error's text; fails the test where the model imports (or panics, as it did).
fn import_error(bytes: &[u8]) -> String {
    match Model::from_bytes(bytes, None) {
        Ok(_) => panic!("the model imported; a clear error was expected"),
        Err(e) => e.to_string(),
    }
}

/// Fuzz seed 1, case 880: a Reshape target of [8, i64::MAX, 64] overflowed the element count in
/// shape inference (ir/src/interp/kernels.rs reshape_shape).
#[test]
fn reshape_to_a_shape_whose_size_overflows_is_an_error() {
    let bytes = model(
        vec![node("Reshape", &["X", "s"], &["Y"], &[])],
        &[("X", &[2, 3])],
        vec![i64_tensor("s", &[3], &[8, i64::MAX, 64])],
        &["Y"],
    );
    let e = import_error(&bytes);
    assert!(e.contains("too many elements"), "{e}");
    assert!(e.contains("Reshape"), "names the node: {e}");
}

/// Fuzz seed 1, case 1134: Split of a constant scalar indexed an empty shape when the importer
/// folded it (ir/src/interp/kernels.rs split).
#[test]
fn split_of_a_constant_scalar_is_an_error() {
    let bytes = model(
        vec![node("Split", &["a"], &["Y", "Z"], &[("axis", 0)])],
        &[],
        vec![f32_tensor("a", &[], &[1.5])],
        &["Y", "Z"],
    );
    let e = import_error(&bytes);
    assert!(e.contains("scalar"), "{e}");
}

/// The same Split on a scalar graph input panicked in shape inference (ir/src/shape.rs); the
/// importer now rejects a rank-0 input of Split.
#[test]
fn split_of_a_scalar_input_is_an_error() {
    let bytes = model(
        vec![node("Split", &["X"], &["Y", "Z"], &[("axis", 0)])],
        &[("X", &[])],
        vec![],
        &["Y", "Z"],
    );
    let e = import_error(&bytes);
    assert!(e.contains("scalar"), "{e}");
}

/// Fuzz seed 1, case 2202: Concat of a [2, 3] and a scalar constant reached ndarray's assertion
/// (ir/src/interp/kernels.rs concat).
#[test]
fn concat_of_constants_of_different_ranks_is_an_error() {
    let bytes = model(
        vec![node("Concat", &["a", "b"], &["Y"], &[("axis", 1)])],
        &[],
        vec![
            f32_tensor("a", &[2, 3], &[1.0; 6]),
            f32_tensor("b", &[], &[1.0]),
        ],
        &["Y"],
    );
    let e = import_error(&bytes);
    assert!(e.contains("ranks differ"), "{e}");
}

/// The fixed kernels still do their job: a Concat of two ranks that match runs in the
/// interpreter and the JIT with the expected values.
#[test]
fn concat_and_split_of_matching_ranks_still_run() {
    let bytes = model(
        vec![
            node("Concat", &["X", "b"], &["C"], &[("axis", 1)]),
            node("Split", &["C"], &["Y", "Z"], &[("axis", 1)]),
        ],
        &[("X", &[2, 3])],
        vec![f32_tensor("b", &[2, 1], &[7.0, 8.0])],
        &["Y", "Z"],
    );
    let x = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("a tensor");
    for engine in [Engine::Interp, Engine::Jit] {
        let r = Model::from_bytes(&bytes, None)
            .and_then(|m| m.optimize(&OptimizeOptions::default()))
            .and_then(|m| m.into_runnable(&BuildOptions::engine(engine)));
        let out = match r.and_then(|r| r.run(std::slice::from_ref(&x))) {
            Ok(o) => o,
            Err(e) => panic!("{}: {e}", engine.name()),
        };
        let y: Vec<f32> = out[0].as_f32().expect("f32").iter().copied().collect();
        let z: Vec<f32> = out[1].as_f32().expect("f32").iter().copied().collect();
        assert_eq!(y, [1.0, 2.0, 4.0, 5.0], "{}", engine.name());
        assert_eq!(z, [3.0, 7.0, 6.0, 8.0], "{}", engine.name());
    }
}

/// Fuzz seed 2, cases 3816 and 1744: Gather from a scalar indexed an empty shape, in the
/// importer's folding (ir/src/interp/kernels.rs gather) and in shape inference (ir/src/shape.rs;
/// the importer now rejects a rank-0 data operand).
#[test]
fn gather_from_a_scalar_is_an_error() {
    let i = i64_tensor("i", &[1], &[0]);
    for (inputs, inits) in [
        (vec![], vec![f32_tensor("a", &[], &[1.5]), i.clone()]),
        (vec![("a", &[][..])], vec![i.clone()]),
    ] {
        let bytes = model(
            vec![node("Gather", &["a", "i"], &["Y"], &[("axis", 0)])],
            &inputs,
            inits,
            &["Y"],
        );
        let e = import_error(&bytes);
        assert!(e.contains("scalar"), "{e}");
    }
}

/// Fuzz seed 2, case 5156: a Scan body whose carried input is declared [i64::MAX, 2] (the
/// initial state is [1, 2]) overflowed an element count in the lowering
/// (passes/src/lower/recurrence.rs). Now the lowering refuses it, or the model runs as the
/// reference interpreter says.
#[test]
fn a_scan_body_with_a_huge_declared_dim_does_not_overflow() {
    let mut body = GraphProto::new();
    body.name = "body".into();
    body.input = vec![
        value("h_in", Some(&[i64::MAX, 2])),
        value("x_t", Some(&[1, 2])),
    ];
    body.output = vec![value("h_out", None), value("y_t", None)];
    body.node = vec![
        node("Add", &["h_in", "x_t"], &["h_out"], &[]),
        node("Identity", &["h_out"], &["y_t"], &[]),
    ];
    let mut scan = node("Scan", &["h0", "X"], &["H", "Y"], &[("num_scan_inputs", 1)]);
    let mut a = AttributeProto::new();
    a.name = "body".into();
    a.type_ = AttributeType::GRAPH.into();
    a.g = Some(body).into();
    scan.attribute.push(a);
    let bytes = model(
        vec![scan],
        &[("X", &[3, 1, 2])],
        vec![f32_tensor("h0", &[1, 2], &[0.5, -0.5])],
        &["H", "Y"],
    );
    // The declaration contradicts the state the Scan passes: refused at import, where the
    // lowering used to overflow on it.
    let e = import_error(&bytes);
    assert!(
        e.contains(
            "body input 'h_in' is declared f32[9223372036854775807,2] but receives f32[1,2]"
        ),
        "{e}"
    );
}

/// Fuzz seed 1, case 3803 (saved, shrunk, in tests/fuzz/): the ONNX node test
/// test_scan9_scalar with its opset set to 8 made a Scan-8 over scalar operands, whose rows were
/// taken with a Gather that panicked in shape inference (ir/src/shape.rs).
#[test]
fn scan8_over_scalar_operands_is_an_error() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz/scan8_scalar_operands.onnx"
    );
    let bytes = std::fs::read(path).expect("the saved mutant");
    let e = import_error(&bytes);
    assert!(e.contains("Scan-8 operands need a batch axis"), "{e}");
}

/// Fuzz seed 7, case 241: split sizes whose sum overflows i64 panicked in
/// ir/src/interp/kernels.rs split_sizes.
#[test]
fn split_sizes_that_overflow_are_an_error() {
    let bytes = model(
        vec![node("Split", &["X", "s"], &["Y", "Z"], &[("axis", 0)])],
        &[("X", &[4, 2])],
        vec![i64_tensor("s", &[2], &[i64::MAX, 2])],
        &["Y", "Z"],
    );
    let e = import_error(&bytes);
    assert!(e.contains("do not sum to 4"), "{e}");
}

/// Fuzz seed 7, case 537: an H-LSTM whose input was declared with 0 time steps ran in the
/// interpreter, while the JIT built it and refused every run ("this program runs 1 to 0
/// steps"). The lowering now refuses a 0-step sequence at build time (so that
/// `into_runnable_or_interp` falls back to the interpreter), or the JIT agrees.
#[test]
fn a_sequence_of_zero_steps_is_refused_at_build_time_or_runs() {
    let (h, x) = (1i64, 2i64);
    let w = f32_tensor("W", &[1, 4 * h, x], &[0.1; 8]);
    let r = f32_tensor("R", &[1, 4 * h, h], &[0.2; 4]);
    let mut lstm = node(
        "LSTM",
        &["X", "W", "R"],
        &["Y", "Y_h"],
        &[("hidden_size", h)],
    );
    lstm.name = "lstm".into();
    let bytes = model(vec![lstm], &[("X", &[0, 1, x])], vec![w, r], &["Y", "Y_h"]);
    let input = Tensor::from_f32(&[0, 1, 2], vec![]).expect("an empty tensor");
    let load =
        || Model::from_bytes(&bytes, None).and_then(|m| m.optimize(&OptimizeOptions::default()));
    let built = load().and_then(|m| m.into_runnable(&BuildOptions::engine(Engine::Jit)));
    let want = load()
        .and_then(|m| m.into_runnable(&BuildOptions::engine(Engine::Interp)))
        .and_then(|r| r.run(std::slice::from_ref(&input)));
    match built {
        Err(e) => assert!(e.to_string().contains("0 steps"), "{e}"),
        Ok(jit) => {
            let got = jit.run(std::slice::from_ref(&input));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (got, want) => panic!("the JIT built but: jit {got:?}, interp {want:?}"),
            }
        }
    }
    // The default engine falls back to the interpreter where the JIT declines.
    let (r, _) = load()
        .and_then(|m| m.into_runnable_or_interp(&BuildOptions::default()))
        .expect("a runnable model");
    assert!(r.run(std::slice::from_ref(&input)).is_ok());
}

/// Fuzz seed 7, case 9173: Squeeze of a constant scalar with axes [0] indexed an empty shape
/// (ir/src/interp/kernels.rs squeeze_shape); Slice, Softmax and the recurrences' Reverse take
/// their axis the same way now.
#[test]
fn squeeze_and_slice_of_a_constant_scalar_are_errors() {
    let squeeze = model(
        vec![node("Squeeze", &["a", "axes"], &["Y"], &[])],
        &[],
        vec![f32_tensor("a", &[], &[1.5]), i64_tensor("axes", &[1], &[0])],
        &["Y"],
    );
    let slice = model(
        vec![node("Slice", &["a", "s", "e"], &["Y"], &[])],
        &[],
        vec![
            f32_tensor("a", &[], &[1.5]),
            i64_tensor("s", &[1], &[0]),
            i64_tensor("e", &[1], &[1]),
        ],
        &["Y"],
    );
    for bytes in [squeeze, slice] {
        let e = import_error(&bytes);
        assert!(e.contains("scalar") || e.contains("rank"), "{e}");
    }
}

/// Fuzz seed 7, case 86822: the unrolled H-LSTM fixture with its initial cell state `c_0`
/// stored as [64] instead of [1, 64] (step 0 broadcasts it back to [1, 64]). The reroll pass
/// made it the start of a loop that carries [1, 64], and the optimized model failed where the
/// imported one ran. Now the loop is left unrolled and both agree.
#[test]
fn reroll_keeps_a_loop_whose_start_has_another_shape_unrolled() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/hlstm_unroll_H64_X32_T8_sp97/model.onnx"
    );
    let mut m =
        ModelProto::parse_from_bytes(&std::fs::read(path).expect("the fixture")).expect("decodes");
    let g = m.graph.as_mut().expect("a graph");
    let c0 = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "c_0")
        .expect("the fixture's initial cell state");
    assert_eq!(c0.dims, [1, 64]);
    c0.dims = vec![64];
    let bytes = m.write_to_bytes().expect("serializes");
    let x: Vec<f32> = (0..8 * 32).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    let x = Tensor::from_f32(&[8, 1, 32], x).expect("a tensor");
    let run = |opts: OptimizeOptions| {
        Model::from_bytes(&bytes, None)
            .and_then(|m| m.optimize(&opts))
            .and_then(|m| m.into_runnable(&BuildOptions::engine(Engine::Interp)))
            .and_then(|r| r.run(std::slice::from_ref(&x)))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (want, got) = (
        run(OptimizeOptions::none()),
        run(OptimizeOptions::default()),
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let c = hlstmc::test_data::compare(g, w, 1e-3, 1e-4).expect("same shapes");
        assert_eq!(c.bad, 0, "{c:?}");
    }
}
