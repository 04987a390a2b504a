//! ONNX `Loop` (issue 15): a counted loop over a sequence becomes a recurrence and runs exactly
//! (the Keras fixtures in tests/fixtures/extra/keras_* check real exports against ONNX
//! Runtime); every other Loop is refused with the reason, so none runs wrong. The logic ops
//! fold on constants and are IR ops on computed values (tests/keras_masked.rs).

mod common;

use common::{f32_tensor, hlstmc, i64_tensor, model, node, save, stderr, stdout, value_info};
use onnx_protobuf::{AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto};

fn bool_tensor(name: &str, v: bool) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = 9;
    t.int32_data = vec![v as i32];
    t
}

fn scalar_info(name: &str, elem: i32) -> ValueInfoProto {
    value_info(name, elem, &[])
}

/// A declared output without a shape.
fn open_info(name: &str) -> ValueInfoProto {
    hlstmc::frontends::onnx::export::value_info_proto(name, 1, None)
}

/// A .npy file of f32 values, in order.
fn read_npy_f32(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    npy.into_vec::<f32>().unwrap()
}

fn loop_node(inputs: &[&str], outputs: &[&str], body: GraphProto) -> NodeProto {
    let mut n = node("Loop", "loop", inputs, outputs);
    let mut a = AttributeProto::new();
    a.name = "body".into();
    a.type_ = protobuf::EnumOrUnknown::from_i32(5);
    a.g = Some(body).into();
    n.attribute.push(a);
    n
}

/// A body `h' = h + x[t]` over x [T, 2], with the step output h'; `cond` computes the next
/// condition from the body's values named in it.
fn body(cond: Vec<NodeProto>, cond_out: &str, extra: Vec<NodeProto>) -> GraphProto {
    let mut g = GraphProto::new();
    g.name = "body".into();
    g.input = vec![
        scalar_info("i", 7),
        scalar_info("c", 9),
        value_info("h", 1, &[2]),
    ];
    let mut nodes = vec![
        node("Gather", "read", &["x", "i"], &["xt"]),
        node("Add", "acc", &["h", "xt"], &["h2"]),
    ];
    nodes.extend(extra);
    nodes.extend(cond);
    g.node = nodes;
    g.output = vec![
        scalar_info(cond_out, 9),
        value_info("h2", 1, &[2]),
        value_info("h2", 1, &[2]),
    ];
    g
}

fn write(dir: &std::path::Path, m: &onnx_protobuf::ModelProto) -> String {
    let p = dir.join("loop.onnx");
    save(m, &p);
    p.display().to_string()
}

/// The loop of `body_graph` over x [4, 2] (M = `trips`), starting at h = 0.
fn loop_model(trips: Option<i64>, body_graph: GraphProto) -> onnx_protobuf::ModelProto {
    let mut inits = vec![
        bool_tensor("true", true),
        f32_tensor("h0", &[2], &[0.0, 0.0]),
        f32_tensor("one_f", &[], &[1.0]),
        i64_tensor("one", &[], &[1]),
        i64_tensor("three", &[], &[3]),
        i64_tensor("zero_i", &[], &[0]),
    ];
    let m_name = match trips {
        Some(t) => {
            inits.push(i64_tensor("M", &[], &[t]));
            "M"
        }
        None => "",
    };
    model(
        17,
        vec![value_info("x", 1, &[4, 2])],
        vec![open_info("h_last"), open_info("hs")],
        inits,
        vec![loop_node(
            &[m_name, "true", "h0"],
            &["h_last", "hs"],
            body_graph,
        )],
    )
}

fn x_input(dir: &std::path::Path) -> String {
    let x = dir.join("x.npy");
    common::write_npy_f32(&x, &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    format!("x={}", x.display())
}

/// M = 4 with the condition passed through, and M = 4 with `i + 1 < 3` as the condition (3
/// steps): the running sums, from every engine.
#[test]
fn a_counted_loop_runs_its_exact_steps() {
    let dir = tempfile::tempdir().unwrap();
    let xi = x_input(dir.path());
    let through = body(
        vec![node("Identity", "keep", &["c"], &["c2"])],
        "c2",
        vec![],
    );
    let by_counter = body(
        vec![
            node("Add", "next", &["i", "one"], &["i1"]),
            node("Less", "more", &["i1", "three"], &["c2"]),
        ],
        "c2",
        vec![],
    );
    for (b, steps) in [(through, 4), (by_counter, 3)] {
        let m = write(dir.path(), &loop_model(Some(4), b));
        let sums = [[1.0, 2.0], [4.0, 6.0], [9.0, 12.0], [16.0, 20.0]];
        for engine in ["interp", "jit", "kernel-interp"] {
            let out = dir.path().join(format!("out-{engine}"));
            let o = hlstmc(&[
                "run",
                &m,
                "-i",
                &xi,
                "--engine",
                engine,
                "-o",
                &out.display().to_string(),
            ]);
            assert!(o.status.success(), "{engine}: {}", stderr(&o));
            let hs = read_npy_f32(&out.join("hs.npy"));
            let want: Vec<f32> = sums[..steps].iter().flatten().copied().collect();
            assert_eq!(hs, want, "{engine}, {steps} steps");
            let last = read_npy_f32(&out.join("h_last.npy"));
            assert_eq!(last, sums[steps - 1].to_vec(), "{engine}");
        }
        let o = hlstmc(&["inspect", &m]);
        assert!(
            stdout(&o).contains(&format!("hs: f32[{steps},2]")),
            "{}",
            stdout(&o)
        );
    }
}

/// Loops hlstmc cannot compile are refused with the reason, naming the node.
#[test]
fn other_loops_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The condition reads the carried state: a data-dependent loop.
    let data_dependent = body(
        vec![
            node("Gather", "first", &["h2", "zero_i"], &["s"]),
            node("Less", "more", &["s", "one_f"], &["c2"]),
        ],
        "c2",
        vec![],
    );
    // The counter in arithmetic (not only in reads x[t]): h2 = (h + x[t]) * i.
    let counter_math = {
        let mut g = body(
            vec![node("Identity", "keep", &["c"], &["c2"])],
            "c2",
            vec![],
        );
        g.node[1] = node("Add", "acc", &["h", "xt"], &["h1"]);
        let mut cast = node("Cast", "fi", &["i"], &["fi"]);
        cast.attribute.push(common::int_attr("to", 1));
        g.node.push(cast);
        g.node.push(node("Mul", "scale", &["h1", "fi"], &["h2"]));
        g
    };
    let cases: Vec<(onnx_protobuf::ModelProto, &str)> = vec![
        (loop_model(Some(4), data_dependent), "not a counted loop"),
        (
            loop_model(Some(4), counter_math),
            "uses the loop's counter or condition 'i'",
        ),
        (
            loop_model(
                None,
                body(
                    vec![node("Identity", "keep", &["c"], &["c2"])],
                    "c2",
                    vec![],
                ),
            ),
            "more than",
        ),
    ];
    for (m, want) in cases {
        let p = write(dir.path(), &m);
        let o = hlstmc(&["inspect", &p]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("node 'loop' (Loop)") && err.contains(want),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `Less` and friends on a computed value are the IR's comparison ops (they fold only on
/// constants), and a ReverseSequence with lengths that may be short is refused.
#[test]
fn logic_on_computed_values_imports_and_short_reverse_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        17,
        vec![value_info("x", 1, &[2])],
        vec![value_info("y", 9, &[2])],
        vec![f32_tensor("zero", &[2], &[0.0, 0.0])],
        vec![node("Less", "cmp", &["x", "zero"], &["y"])],
    );
    let p = write(dir.path(), &m);
    let o = hlstmc(&["inspect", &p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("less ") && out.contains("y: bool[2]"), "{out}");
    let m = model(
        17,
        vec![value_info("x", 1, &[4, 2, 3]), value_info("lens", 7, &[2])],
        vec![value_info("y", 1, &[4, 2, 3])],
        vec![],
        vec![node("ReverseSequence", "rev", &["x", "lens"], &["y"])],
    );
    let p = write(dir.path(), &m);
    let err = stderr(&hlstmc(&["inspect", &p]));
    assert!(
        err.contains("node 'rev' (ReverseSequence)") && err.contains("shorter than the 4 steps"),
        "{err}"
    );
}
