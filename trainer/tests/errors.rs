//! Autodiff's error paths: every bad request is an `Err` whose message names the problem and,
//! where one node is at fault, the node and its op.

mod common;

use common::{Case, f32_type};
use hlstm_ir::{Act, DType, Dim, Graph, Op, Recurrence, Tensor, TensorType};
use hlstm_trainer::{Builder, Options, training_graph};

fn err(g: &Graph, loss: &str, params: &[&str]) -> String {
    training_graph(g, loss, params, &Options::default())
        .expect_err("autodiff should fail")
        .to_string()
}

fn simple(act: Act) -> Graph {
    let mut c = Case::new(1);
    let x = c.param("x", &[2], -1.0, 1.0);
    let y = c.b.op("y", Op::Unary(act), &[x]).unwrap();
    c.loss(y);
    c.b.g
}

#[test]
fn bad_requests() {
    let g = simple(Act::Tanh);
    assert!(err(&g, "nope", &["x"]).contains("no output named 'nope'"));
    assert!(err(&g, "loss", &["w"]).contains("no graph input named 'w'"));
    let mut g2 = g.clone();
    let x = hlstm_ir::Value {
        node: g2.inputs[0],
        slot: 0,
    };
    g2.outputs.push(("vector".into(), x));
    assert!(err(&g2, "vector", &["x"]).contains("must be an f32 with one element"));
}

#[test]
fn integer_parameters_have_no_gradient() {
    let mut c = Case::new(2);
    let x = c.param("x", &[3], -1.0, 1.0);
    let idx = c.input("idx", Tensor::from_i64(&[2], vec![0, 2]).unwrap());
    let y = c.b.op("y", Op::Gather { axis: 0 }, &[x, idx]).unwrap();
    c.loss(y);
    let e = err(&c.b.g, "loss", &["idx"]);
    assert!(e.contains("only f32 inputs have gradients"), "{e}");
}

#[test]
fn ops_without_a_rule_are_named() {
    let e = err(&simple(Act::Softsign), "loss", &["x"]);
    assert!(
        e.contains("node 'y' (softsign)") && e.contains("no gradient rule"),
        "{e}"
    );
    // Gather along another axis than 0.
    let mut c = Case::new(3);
    let x = c.param("x", &[2, 3], -1.0, 1.0);
    let idx = c.input("idx", Tensor::from_i64(&[2], vec![0, 2]).unwrap());
    let y = c.b.op("pick", Op::Gather { axis: 1 }, &[x, idx]).unwrap();
    c.loss(y);
    let e = err(&c.b.g, "loss", &["x"]);
    assert!(
        e.contains("node 'pick' (gather)") && e.contains("axis 0"),
        "{e}"
    );
}

#[test]
fn symbolic_shapes_are_refused_with_the_reason() {
    // loss = (x * w)[0] @ w with x: f32[N, 2]: the loss has a static shape, its inputs do not.
    let mut g = Graph::new();
    let n = Dim::Sym("N".into());
    let x = g.add_input("x", TensorType::new(DType::F32, vec![n, Dim::Known(2)]));
    let w = g.add_input("w", f32_type(&[2]));
    let y = g.add_inferred("y", Op::Binary(hlstm_ir::BinOp::Mul), &[Some(x), Some(w)]);
    let zero = g.add_const("zero", Tensor::from_i64(&[], vec![0]).unwrap());
    let row = g.add_inferred("row", Op::Gather { axis: 0 }, &[y.ok(), Some(zero)]);
    let l = g
        .add_inferred("l", Op::MatMul, &[row.ok(), Some(w)])
        .unwrap();
    g.outputs.push(("loss".into(), l));
    let e = err(&g, "loss", &["w"]);
    assert!(
        e.contains("node 'row' (gather)") && e.contains("static shapes"),
        "{e}"
    );
}

fn recurrence_graph(nested: bool, seq_lens: bool) -> Graph {
    let mut body = Builder::new(Graph::new());
    let h = body.g.add_input("h", f32_type(&[2]));
    let x = body.g.add_input("x", f32_type(&[2]));
    let mut h1 = body.bin("h1", hlstm_ir::BinOp::Mul, h, x).unwrap();
    if nested {
        let mut inner = Builder::new(Graph::new());
        let a = inner.g.add_input("a", f32_type(&[2]));
        let _s = inner.g.add_input("s", f32_type(&[2]));
        let t = inner.op("t", Op::Unary(Act::Tanh), &[a]).unwrap();
        inner.g.outputs = vec![("a".into(), t)];
        let xs = body.b_stack(x);
        let r = Recurrence {
            body: Box::new(inner.g),
            num_carried: 1,
            num_scanned: 1,
            num_invariant: 0,
            reverse: false,
            has_seq_lens: false,
        };
        h1 = body
            .node("inner", Op::Recurrence(r), &[Some(h1), Some(xs)])
            .unwrap()[0];
    }
    body.g.outputs = vec![("h".into(), h1)];
    let mut c = Case::new(4);
    let h0 = c.param("h0", &[2], -1.0, 1.0);
    let xs = c.param("X", &[3, 2], -1.0, 1.0);
    let mut ops = vec![Some(h0), Some(xs)];
    if seq_lens {
        ops.push(Some(c.b.ints(&[3])));
    }
    let r = Recurrence {
        body: Box::new(body.g),
        num_carried: 1,
        num_scanned: 1,
        num_invariant: 0,
        reverse: false,
        has_seq_lens: seq_lens,
    };
    let res = c.b.node("outer", Op::Recurrence(r), &ops).unwrap();
    c.loss(res[0]);
    c.b.g
}

trait Stack {
    fn b_stack(&mut self, x: hlstm_ir::Value) -> hlstm_ir::Value;
}

impl Stack for Builder {
    /// x [2] as a sequence of one step [1, 2].
    fn b_stack(&mut self, x: hlstm_ir::Value) -> hlstm_ir::Value {
        self.reshape("xs", x, &[1, 2]).unwrap()
    }
}

#[test]
fn unsupported_recurrences_are_named() {
    let e = err(&recurrence_graph(false, true), "loss", &["h0"]);
    assert!(
        e.contains("node 'outer' (recurrence)") && e.contains("sequence lengths"),
        "{e}"
    );
    let e = err(&recurrence_graph(true, false), "loss", &["h0"]);
    assert!(
        e.contains("node 'inner' (recurrence)") && e.contains("nested"),
        "{e}"
    );
    assert!(e.contains("in the body of recurrence 'outer'"), "{e}");
}
