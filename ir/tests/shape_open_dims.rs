//! Shape inference keeps the dims it can when a dim is known only at run time (issue 15's
//! audit of ops with optional or run-time operands): Split with constant sizes on an open
//! axis, Flatten of shapes with one open dim.

use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{DType, Dim, Op, Tensor, TensorType};

fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}

fn ty(dims: Vec<Dim>) -> TensorType {
    TensorType::new(DType::F32, dims)
}

fn shapes(out: Vec<TensorType>) -> Vec<Vec<Dim>> {
    out.into_iter().map(|t| t.shape.expect("a rank")).collect()
}

#[test]
fn split_with_constant_sizes_fixes_each_part_on_an_open_axis() {
    use Dim::Known as K;
    let x = ty(vec![sym("T"), sym("B"), K(3)]);
    let sizes = Tensor::from_i64(&[2], vec![2, 3]).expect("1-D");
    let sizes_ty = sizes.ty();
    let op = Op::Split {
        axis: 0,
        num_outputs: 2,
    };
    let args = [
        Some(Operand {
            ty: &x,
            value: None,
        }),
        Some(Operand {
            ty: &sizes_ty,
            value: Some(&sizes),
        }),
    ];
    assert_eq!(
        shapes(infer(&op, &args).unwrap()),
        vec![vec![K(2), sym("B"), K(3)], vec![K(3), sym("B"), K(3)]]
    );
    // Without sizes an open axis stays open, and the other dims stay.
    assert_eq!(
        shapes(infer(&op, &args[..1]).unwrap()),
        vec![vec![Dim::Unknown, sym("B"), K(3)]; 2]
    );
}

#[test]
fn flatten_keeps_a_lone_open_dim_and_known_products() {
    use Dim::Known as K;
    let one = |dims: Vec<Dim>, axis: i64| {
        let x = ty(dims);
        shapes(
            infer(
                &Op::Flatten { axis },
                &[Some(Operand {
                    ty: &x,
                    value: None,
                })],
            )
            .unwrap(),
        )
        .remove(0)
    };
    assert_eq!(one(vec![sym("B"), K(16)], 1), vec![sym("B"), K(16)]);
    assert_eq!(one(vec![sym("B"), K(2), K(3)], 2), vec![Dim::Unknown, K(3)]);
    assert_eq!(
        one(vec![sym("B"), K(2), K(3)], -1),
        vec![Dim::Unknown, K(3)]
    );
    assert_eq!(
        one(vec![K(1), sym("B"), K(4), K(5)], 2),
        vec![sym("B"), K(20)]
    );
    assert_eq!(one(vec![sym("B"), K(4)], 0), vec![K(1), Dim::Unknown]);
    assert_eq!(one(vec![sym("B"), K(4)], 2), vec![Dim::Unknown, K(1)]);
}
