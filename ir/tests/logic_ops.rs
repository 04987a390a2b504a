//! The reference semantics of the comparison, logic, `not` and `reduce_sum` ops (issue 15):
//! ONNX's, on real bool and integer tensors, with numpy broadcasting; NaN compares false; shape
//! inference keeps what it can of symbolic dims; bad operands are errors, not panics.

use hlstm_ir::interp::eval_op;
use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{CmpOp, DType, Dim, LogicOp, Op, Tensor, TensorType};
use ndarray::{ArrayD, IxDyn};

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape, v.to_vec()).unwrap()
}
fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_i64(shape, v.to_vec()).unwrap()
}
fn i32t(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::I32(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap())
}
fn boolt(shape: &[usize], v: &[bool]) -> Tensor {
    Tensor::Bool(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap())
}
fn eval1(op: Op, args: &[&Tensor]) -> Result<Tensor, String> {
    let a: Vec<Option<&Tensor>> = args.iter().map(|t| Some(*t)).collect();
    eval_op(&op, &a).map(|mut v| v.remove(0))
}
fn bools(t: &Tensor) -> Vec<bool> {
    match t {
        Tensor::Bool(a) => a.iter().copied().collect(),
        other => panic!("not bool: {}", other.dtype()),
    }
}

#[test]
fn comparisons_follow_ieee_and_broadcast() {
    let a = f32t(&[6], &[1.0, 2.0, f32::NAN, 0.0, f32::INFINITY, -1.0]);
    let b = f32t(&[6], &[1.0, 1.0, 1.0, -0.0, f32::INFINITY, f32::NAN]);
    let want = |c: CmpOp| -> Vec<bool> {
        match c {
            CmpOp::Equal => vec![true, false, false, true, true, false],
            CmpOp::Less => vec![false, false, false, false, false, false],
            CmpOp::Greater => vec![false, true, false, false, false, false],
            CmpOp::LessOrEqual => vec![true, false, false, true, true, false],
            CmpOp::GreaterOrEqual => vec![true, true, false, true, true, false],
        }
    };
    for c in CmpOp::ALL {
        let y = eval1(Op::Compare(c), &[&a, &b]).unwrap();
        assert_eq!(bools(&y), want(c), "{}", c.name());
    }
    // Integers and bools; broadcasting [2,1] against [3].
    let x = i64t(&[2, 1], &[1, 5]);
    let y = i64t(&[3], &[0, 1, 9]);
    let r = eval1(Op::Compare(CmpOp::Greater), &[&x, &y]).unwrap();
    assert_eq!(r.shape(), &[2, 3]);
    assert_eq!(bools(&r), [true, false, false, true, true, false]);
    let r = eval1(
        Op::Compare(CmpOp::LessOrEqual),
        &[&i32t(&[2], &[3, 4]), &i32t(&[], &[3])],
    )
    .unwrap();
    assert_eq!(bools(&r), [true, false]);
    let p = boolt(&[4], &[true, true, false, false]);
    let q = boolt(&[4], &[true, false, true, false]);
    assert_eq!(
        bools(&eval1(Op::Compare(CmpOp::Equal), &[&p, &q]).unwrap()),
        [true, false, false, true]
    );
    // Mixed types and shapes that do not broadcast are errors.
    let e = eval1(Op::Compare(CmpOp::Less), &[&a, &x]).unwrap_err();
    assert!(e.contains("differ"), "{e}");
    let e = eval1(Op::Compare(CmpOp::Less), &[&a, &f32t(&[4], &[0.0; 4])]).unwrap_err();
    assert!(e.contains("broadcast"), "{e}");
}

#[test]
fn logic_and_not_on_bools_only() {
    let p = boolt(&[4], &[true, true, false, false]);
    let q = boolt(&[4], &[true, false, true, false]);
    let want = [
        (LogicOp::And, [true, false, false, false]),
        (LogicOp::Or, [true, true, true, false]),
        (LogicOp::Xor, [false, true, true, false]),
    ];
    for (l, w) in want {
        assert_eq!(bools(&eval1(Op::Logic(l), &[&p, &q]).unwrap()), w);
    }
    let one = boolt(&[], &[true]);
    assert_eq!(
        bools(&eval1(Op::Logic(LogicOp::Xor), &[&p, &one]).unwrap()),
        [false, false, true, true]
    );
    assert_eq!(
        bools(&eval1(Op::Not, &[&p]).unwrap()),
        [false, false, true, true]
    );
    let f = f32t(&[4], &[1.0; 4]);
    assert!(eval1(Op::Logic(LogicOp::And), &[&p, &f]).is_err());
    assert!(eval1(Op::Not, &[&f]).unwrap_err().contains("bool"));
}

fn sum(keepdims: bool, noop: bool) -> Op {
    Op::ReduceSum {
        keepdims,
        noop_with_empty_axes: noop,
    }
}

#[test]
fn reduce_sum_axes_keepdims_and_types() {
    let x = f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ax = |v: &[i64]| i64t(&[v.len()], v);
    let r = eval1(sum(true, false), &[&x, &ax(&[-1])]).unwrap();
    assert_eq!(r, f32t(&[2, 1], &[6.0, 15.0]));
    let r = eval1(sum(false, false), &[&x, &ax(&[0])]).unwrap();
    assert_eq!(r, f32t(&[3], &[5.0, 7.0, 9.0]));
    let r = eval1(sum(false, false), &[&x, &ax(&[0, 1])]).unwrap();
    assert_eq!(r, f32t(&[], &[21.0]));
    // No axes: every axis, unless noop_with_empty_axes.
    let r = eval_op(&sum(true, false), &[Some(&x), None]).unwrap();
    assert_eq!(r[0], f32t(&[1, 1], &[21.0]));
    let r = eval_op(&sum(true, true), &[Some(&x), None]).unwrap();
    assert_eq!(r[0], x);
    let r = eval1(sum(false, true), &[&x, &ax(&[])]).unwrap();
    assert_eq!(r, x);
    // Integers (a count of true elements); bools are refused.
    let m = i64t(&[2, 3], &[1, 0, 1, 1, 1, 1]);
    let r = eval1(sum(false, false), &[&m, &ax(&[1])]).unwrap();
    assert_eq!(r, i64t(&[2], &[2, 3]));
    let b = boolt(&[2], &[true, false]);
    assert!(eval1(sum(false, false), &[&b, &ax(&[0])]).is_err());
    // An axis out of range is an error.
    let e = eval1(sum(false, false), &[&x, &ax(&[2])]).unwrap_err();
    assert!(e.contains("out of range"), "{e}");
    // f32 sums are exact through f64 where f32 accumulation would round.
    let big = f32t(&[3], &[1e8, 1.0, -1e8]);
    assert_eq!(
        eval1(sum(false, false), &[&big, &ax(&[0])]).unwrap(),
        f32t(&[], &[1.0])
    );
}

#[test]
fn inference_of_the_new_ops() {
    let sym = |d: &[Option<usize>]| -> Vec<Dim> {
        d.iter()
            .map(|x| match x {
                Some(n) => Dim::Known(*n),
                None => Dim::Sym("B".into()),
            })
            .collect()
    };
    let x = TensorType::new(DType::F32, sym(&[None, Some(6), Some(5)]));
    let zero = TensorType::known(DType::F32, &[]);
    let op = |ty| Operand { ty, value: None };
    let t = infer(&Op::Compare(CmpOp::Equal), &[Some(op(&x)), Some(op(&zero))]).unwrap();
    assert_eq!(
        t[0],
        TensorType::new(DType::Bool, sym(&[None, Some(6), Some(5)]))
    );
    let b = t[0].clone();
    assert_eq!(infer(&Op::Not, &[Some(op(&b))]).unwrap()[0], b);
    assert!(infer(&Op::Not, &[Some(op(&x))]).is_err());
    assert!(infer(&Op::Logic(LogicOp::Or), &[Some(op(&x)), Some(op(&x))]).is_err());
    assert!(infer(&Op::Compare(CmpOp::Less), &[Some(op(&x)), Some(op(&b))]).is_err());
    let axes = i64t(&[1], &[-1]);
    let at = axes.ty();
    let a = Operand {
        ty: &at,
        value: Some(&axes),
    };
    let t = infer(&sum(true, false), &[Some(op(&x)), Some(a)]).unwrap();
    assert_eq!(t[0].shape, Some(sym(&[None, Some(6), Some(1)])));
    let t = infer(&sum(false, false), &[Some(op(&x)), Some(a)]).unwrap();
    assert_eq!(t[0].shape, Some(sym(&[None, Some(6)])));
    let t = infer(&sum(false, false), &[Some(op(&x)), None]).unwrap();
    assert_eq!(t[0].shape, Some(vec![]));
    // Axes known only at run time: keepdims keeps the rank.
    let t = infer(&sum(true, false), &[Some(op(&x)), Some(op(&at))]).unwrap();
    assert_eq!(t[0].rank(), Some(3));
}
