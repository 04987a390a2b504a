//! `bind_input_shapes`: specializing a graph with symbolic input dims to concrete shapes inside
//! the IR (binding, re-inference, folding of shape computations), and its errors.

use hlstm_ir::interp::run;
use hlstm_ir::text::parse;
use hlstm_ir::verify::verify;
use hlstm_ir::{Graph, Op, Tensor, TensorType, bind_input_shapes};

/// An input name and the dims it is given.
type Shape<'a> = (&'a str, &'a [usize]);

fn shapes(list: &[Shape]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(n, d)| (n.to_string(), d.to_vec()))
        .collect()
}

fn graph(text: &str) -> Graph {
    let g = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    verify(&g).unwrap_or_else(|e| panic!("the test graph does not verify: {e}"));
    g
}

fn ramp(shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * scale)
        .collect();
    Tensor::from_f32(shape, data).unwrap()
}

/// Every value of the graph and of its bodies, with its type: (node name, value name, type).
fn all_types(g: &Graph) -> Vec<(String, String, TensorType)> {
    let mut out = Vec::new();
    g.walk(&mut |gr, n, _| {
        for r in &gr.nodes[n].results {
            out.push((gr.nodes[n].name.clone(), r.name.clone(), r.ty.clone()));
        }
    });
    out
}

#[track_caller]
fn assert_all_concrete(g: &Graph) {
    for (node, value, ty) in all_types(g) {
        assert!(
            ty.concrete().is_some(),
            "value '{value}' of node '{node}' is {ty}, not concrete\n{}",
            hlstm_ir::text::print(g)
        );
    }
}

fn kinds(g: &Graph) -> Vec<&'static str> {
    g.nodes
        .node_indices()
        .map(|n| g.nodes[n].op.kind())
        .collect()
}

/// An RNN over X: [T,N,4] with an initial state h0: [N,2]; the body declares its step input
/// with an unknown batch dim, which the recurrence's operand must fill in.
const RNN: &str = r#"
graph (%X: f32[T,N,4], %h0: f32[N,2]) -> (ys = %ys, hT = %hT, z = %z) {
  %W = const f32[4,2] [0.5, -0.5, 0.25, 0.0, 1.0, 2.0, -1.0, 0.125]
  %xw = matmul(%X, %W) "MatMul_0" : f32[T,N,2]
  %hT, %ys = recurrence{carried=1, scanned=1, invariant=0, reverse=false, seq_lens=false}(%h0, %xw) "rnn" : f32[N,2], f32[T,N,2]
    body (%h: f32[N,2], %xt: f32[?,2]) -> (h = %h1, y = %h1) {
      %R = const f32[2,2] [0.5, 0.25, -0.25, 0.5]
      %hr = matmul(%h, %R) : f32[N,2]
      %s = add(%xt, %hr) : f32[?,2]
      %h1 = tanh(%s) : f32[?,2]
    }
  %z = sigmoid(%ys) "Sigmoid_2" : f32[?,?,2]
}
"#;

#[test]
fn binds_a_recurrence_and_keeps_its_numbers() {
    let unbound = graph(RNN);
    let mut g = unbound.clone();
    bind_input_shapes(&mut g, &shapes(&[("X", &[3, 2, 4])])).unwrap();
    verify(&g).unwrap();
    // h0 shares N with X, so it is bound too; the body's step input takes N from the operand.
    assert_all_concrete(&g);
    let types: Vec<_> = all_types(&g)
        .into_iter()
        .map(|(_, v, t)| (v, t.to_string()))
        .collect();
    for (v, t) in [
        ("h0", "f32[2,2]"),
        ("xw", "f32[3,2,2]"),
        ("xt", "f32[2,2]"),
        ("s", "f32[2,2]"),
        ("hT", "f32[2,2]"),
        ("ys", "f32[3,2,2]"),
        ("z", "f32[3,2,2]"),
    ] {
        assert!(
            types.contains(&(v.to_string(), t.to_string())),
            "{v}: {t} in {types:?}"
        );
    }
    // Inputs and outputs keep their names and order.
    let in_names = |g: &Graph| -> Vec<String> {
        g.inputs
            .iter()
            .map(|n| g.nodes[*n].results[0].name.clone())
            .collect()
    };
    assert_eq!(in_names(&g), ["X", "h0"]);
    let out_names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(out_names, ["ys", "hT", "z"]);
    for (_, v) in &g.outputs {
        assert!(g.value_type(*v).concrete().is_some());
    }

    let inputs = [ramp(&[3, 2, 4], 0.1), ramp(&[2, 2], 0.3)];
    let want = run(&unbound, &inputs).unwrap();
    let got = run(&g, &inputs).unwrap();
    assert_eq!(got, want);
    assert!(want[0].as_f32().unwrap().iter().any(|v| *v != 0.0));
    // The specialized graph refuses other shapes.
    assert!(run(&g, &[ramp(&[4, 2, 4], 0.1), ramp(&[2, 2], 0.3)]).is_err());
}

#[test]
fn a_symbol_shared_by_two_inputs() {
    let mut g = graph(RNN);
    bind_input_shapes(&mut g, &shapes(&[("X", &[5, 3, 4]), ("h0", &[3, 2])])).unwrap();
    assert_all_concrete(&g);
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[5,3,2]");

    let mut g = graph(RNN);
    let before = g.clone();
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[5, 3, 4]), ("h0", &[4, 2])]));
    assert_eq!(err.unwrap_err(), "dim 'N' is given both 3 and 4");
    assert!(g == before, "a rejected binding leaves the graph alone");

    // The same symbol twice in one input.
    let mut g = graph("graph (%A: f32[N,N]) -> (y = %y) {\n  %y = tanh(%A) : f32[N,N]\n}\n");
    let err = bind_input_shapes(&mut g, &shapes(&[("A", &[2, 3])]));
    assert_eq!(err.unwrap_err(), "dim 'N' is given both 2 and 3");
    bind_input_shapes(&mut g, &shapes(&[("A", &[3, 3])])).unwrap();
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[3,3]");
}

#[test]
fn zero_length_sequence_is_allowed() {
    let unbound = graph(RNN);
    let mut g = unbound.clone();
    bind_input_shapes(&mut g, &shapes(&[("X", &[0, 2, 4])])).unwrap();
    assert_all_concrete(&g);
    let h0 = ramp(&[2, 2], 0.3);
    let out = run(&g, &[ramp(&[0, 2, 4], 1.0), h0.clone()]).unwrap();
    assert_eq!(out[0].shape(), &[0, 2, 2]);
    assert_eq!(out[1], h0);
    // Without static step shapes the interpreter cannot stack zero steps.
    assert!(run(&unbound, &[ramp(&[0, 2, 4], 1.0), h0]).is_err());
}

#[test]
fn shape_gather_slice_concat_reshape_folds() {
    let text = r#"
graph (%X: f32[N,T,4]) -> (Y = %y) {
  %s = shape{start=0}(%X) "Shape_0" : i64[3]
  %zero = const i64[1] [0]
  %n = gather{axis=0}(%s, %zero) "Gather_1" : i64[1]
  %st = const i64[1] [1]
  %en = const i64[1] [2]
  %t = slice(%s, %st, %en) "Slice_2" : i64[1]
  %tail = const i64[2] [2, 2]
  %ns = concat{axis=0}(%n, %t, %tail) "Concat_3" : i64[4]
  %y = reshape{allowzero=false}(%X, %ns) "Reshape_4" : f32[?,?,?,?]
}
"#;
    let unbound = graph(text);
    let mut g = unbound.clone();
    bind_input_shapes(&mut g, &shapes(&[("X", &[2, 3, 4])])).unwrap();
    assert_all_concrete(&g);
    let y = g.outputs[0].1;
    assert_eq!(g.value_type(y).to_string(), "f32[2,3,2,2]");
    // The shape computation is gone: one constant named like the concat's result is left, and
    // the constants only it read are removed.
    let mut k = kinds(&g);
    k.sort();
    assert_eq!(
        k,
        ["const", "input", "reshape"],
        "{}",
        hlstm_ir::text::print(&g)
    );
    let shape_arg = g.operands(y.node)[1].unwrap();
    let c = g
        .constant(shape_arg)
        .expect("the reshape's shape is a constant");
    assert_eq!(c.name, "ns");
    assert_eq!(c.value.to_i64_vec().unwrap(), [2, 3, 2, 2]);
    assert_eq!(g.nodes[y.node].name, "Reshape_4");

    let x = ramp(&[2, 3, 4], 0.5);
    assert_eq!(
        run(&g, std::slice::from_ref(&x)).unwrap(),
        run(&unbound, &[x]).unwrap()
    );
}

#[test]
fn shape_of_known_dims_folds_and_cascades() {
    // Only dims 1.. of X are read: they are known once T is, whatever N is.
    let text = r#"
graph (%X: f32[N,T,4]) -> (c = %c, y = %y) {
  %s = shape{start=1}(%X) : i64[2]
  %c = constant_of_shape{value=f32[1] [1.5]}(%s) : f32[?,?]
  %y = add(%X, %c) : f32[N,?,?]
}
"#;
    let mut g = graph(text);
    // Bind T through a second input that shares it.
    let mut with_t = graph(&text.replace("(%X: f32[N,T,4])", "(%X: f32[N,T,4], %L: i64[T])"));
    bind_input_shapes(&mut with_t, &shapes(&[("L", &[3])])).unwrap();
    assert_eq!(
        with_t.value_type(with_t.outputs[0].1).to_string(),
        "f32[3,4]"
    );
    assert_eq!(
        with_t.value_type(with_t.outputs[1].1).to_string(),
        "f32[N,3,4]"
    );
    assert!(with_t.constant(with_t.outputs[0].1).is_some());
    assert!(!kinds(&with_t).contains(&"shape"));
    // Nothing bound: T stays open and so does everything after the shape.
    bind_input_shapes(&mut g, &[]).unwrap();
    assert!(kinds(&g).contains(&"shape"));
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[?,?]");
}

#[test]
fn unranked_and_unknown_inputs_take_the_given_shape() {
    let text = r#"
graph (%U: f32[*], %V: f32[?,3]) -> (u = %u, v = %v) {
  %u = tanh(%U) : f32[*]
  %v = relu(%V) : f32[?,3]
}
"#;
    let mut g = graph(text);
    bind_input_shapes(&mut g, &shapes(&[("U", &[2, 5]), ("V", &[7, 3])])).unwrap();
    assert_all_concrete(&g);
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[2,5]");
    assert_eq!(g.value_type(g.outputs[1].1).to_string(), "f32[7,3]");
    // A listed input whose only dims were unknown is fixed by the call: a second, different
    // binding is now a mismatch.
    let err = bind_input_shapes(&mut g, &shapes(&[("V", &[8, 3])])).unwrap_err();
    assert_eq!(err, "input 'V' has 7 in dim 0, given 8");
    // A scalar input has rank 0.
    let mut s = graph("graph (%S: f32[]) -> (y = %y) {\n  %y = tanh(%S) : f32[]\n}\n");
    let err = bind_input_shapes(&mut s, &shapes(&[("S", &[1])])).unwrap_err();
    assert_eq!(err, "input 'S' has rank 0, given a shape of rank 1");
    // Listing an input twice checks the second shape against the first.
    let mut g = graph(text);
    let err = bind_input_shapes(&mut g, &shapes(&[("U", &[2, 5]), ("U", &[2, 6])])).unwrap_err();
    assert_eq!(err, "input 'U' has 5 in dim 1, given 6");
}

#[test]
fn input_errors() {
    let cases: &[(&[Shape], &str)] = &[
        (&[("Z", &[1])], "the model has no input named 'Z'"),
        (
            &[("X", &[3, 2])],
            "input 'X' has rank 3, given a shape of rank 2",
        ),
        (
            &[("X", &[3, 2, 4, 1])],
            "input 'X' has rank 3, given a shape of rank 4",
        ),
        (&[("X", &[3, 2, 5])], "input 'X' has 4 in dim 2, given 5"),
        (
            &[("X", &[3, 2, 4]), ("h0", &[2, 3])],
            "input 'h0' has 2 in dim 1, given 3",
        ),
        (
            &[("h0", &[6, 2]), ("X", &[3, 7, 4])],
            "dim 'N' is given both 6 and 7",
        ),
        // The first error in list order wins.
        (
            &[("X", &[3, 2, 4]), ("Z", &[1]), ("X", &[9])],
            "the model has no input named 'Z'",
        ),
    ];
    for (list, want) in cases {
        let mut g = graph(RNN);
        let before = g.clone();
        let err = bind_input_shapes(&mut g, &shapes(list)).unwrap_err();
        assert_eq!(&err, want, "for {list:?}");
        assert!(g == before, "the graph is unchanged after: {err}");
    }
}

#[test]
fn a_declared_dim_that_contradicts_inference_is_an_error() {
    // Declared 3 where the batch turns out to be 2.
    let mut g = graph("graph (%X: f32[N,4]) -> (y = %y) {\n  %y = tanh(%X) : f32[3,4]\n}\n");
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[2, 4])])).unwrap_err();
    assert_eq!(
        err,
        "node 'y' (tanh): result 0 is declared f32[3,4] but inference gives f32[2,4]"
    );
    // ... while the right value passes, and a declared known dim stays where inference has none.
    let mut g = graph("graph (%X: f32[N,4]) -> (y = %y) {\n  %y = tanh(%X) : f32[3,4]\n}\n");
    bind_input_shapes(&mut g, &shapes(&[("X", &[3, 4])])).unwrap();
    let mut g = graph(
        "graph (%X: f32[N,4], %S: i64[2]) -> (y = %y) {\n  %y = reshape{allowzero=false}(%X, %S) : f32[?,8]\n}\n",
    );
    bind_input_shapes(&mut g, &shapes(&[("X", &[2, 4])])).unwrap();
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[?,8]");
}

#[test]
fn a_rank_that_contradicts_inference_is_an_error() {
    // The reshape's target is a run-time shape until X's dims are known: then it has rank 2.
    let text = r#"
graph (%X: f32[N,4]) -> (y = %y) {
  %s = shape{start=0}(%X) : i64[2]
  %y = reshape{allowzero=false}(%X, %s) "Reshape_1" : f32[?,?,?]
}
"#;
    let mut g = graph(text);
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[2, 4])])).unwrap_err();
    assert_eq!(
        err,
        "node 'Reshape_1' (reshape): result 0 is declared f32[?,?,?] but inference gives f32[2,4]"
    );
}

#[test]
fn errors_in_bodies_name_the_recurrence() {
    // A body node declared with a batch of 3.
    let text = RNN.replace(
        "%hr = matmul(%h, %R) : f32[N,2]",
        "%hr = matmul(%h, %R) : f32[3,2]",
    );
    let mut g = graph(&text);
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[1, 2, 4])])).unwrap_err();
    assert_eq!(
        err,
        "body of 'rnn': node 'hr' (matmul): result 0 is declared f32[3,2] but inference gives f32[2,2]"
    );
    // A body input that disagrees with the recurrence's operand.
    let text = RNN.replace("%xt: f32[?,2]", "%xt: f32[3,2]");
    let mut g = graph(&text);
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[1, 2, 4])])).unwrap_err();
    assert_eq!(
        err,
        "node 'rnn' (recurrence): body input 'xt' is declared f32[3,2] but operand 1 gives f32[2,2]"
    );
}

#[test]
fn folding_inside_bodies() {
    // The body reshapes its step input x: [N,4] to [N/2, 4, 2], computed from its own shape:
    // foldable once the batch is bound.
    let text = r#"
graph (%X: f32[T,N,4]) -> (ys = %ys) {
  %ys = recurrence{carried=0, scanned=1, invariant=0, reverse=false, seq_lens=false}(%X) "rnn" : f32[T,?,?,?]
    body (%x: f32[N,4]) -> (y = %y) {
      %s = shape{start=0}(%x) : i64[2]
      %d = const i64[2] [2, 1]
      %h = div(%s, %d) : i64[2]
      %two = const i64[1] [2]
      %m = concat{axis=0}(%h, %two) : i64[3]
      %y = reshape{allowzero=false}(%x, %m) : f32[?,?,?]
    }
}
"#;
    let unbound = graph(text);
    let mut g = unbound.clone();
    bind_input_shapes(&mut g, &shapes(&[("X", &[2, 4, 4])])).unwrap();
    assert_all_concrete(&g);
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[2,2,4,2]");
    let Op::Recurrence(r) = &g.nodes[g.outputs[0].1.node].op else {
        panic!("the recurrence stays")
    };
    let mut body_kinds = kinds(&r.body);
    body_kinds.sort();
    assert_eq!(body_kinds, ["const", "input", "reshape"]);
    let x = ramp(&[2, 4, 4], 0.25);
    assert_eq!(
        run(&g, std::slice::from_ref(&x)).unwrap(),
        run(&unbound, &[x]).unwrap()
    );

    // A reshape to the wrong size verifies while the batch is open; binding finds it.
    let wrong = graph(&text.replace("[2, 1]", "[1, 1]"));
    let mut g = wrong.clone();
    let err = bind_input_shapes(&mut g, &shapes(&[("X", &[2, 4, 4])])).unwrap_err();
    assert!(
        err.starts_with("body of 'rnn': node 'y' (reshape): "),
        "{err}"
    );
}
