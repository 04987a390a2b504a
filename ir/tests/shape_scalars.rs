//! Shape inference of ops that index an axis, given a scalar: an error, never an index out of
//! bounds (found by the fuzzer through `.hir` files and passes, which skip the importer's
//! checks; issue 16).

use hlstm_ir::shape::{Operand, infer};
use hlstm_ir::{DType, Dim, Op, Tensor, TensorType};

#[test]
fn axis_ops_on_a_scalar_are_errors() {
    let scalar = TensorType::new(DType::F32, vec![]);
    let vector = TensorType::new(DType::F32, vec![Dim::Known(4)]);
    let idx_ty = TensorType::new(DType::I64, vec![]);
    let idx = Tensor::from_i64(&[], vec![0]).unwrap();
    let x = Operand {
        ty: &scalar,
        value: None,
    };
    let i = Operand {
        ty: &idx_ty,
        value: Some(&idx),
    };
    let cases: Vec<(Op, Vec<Option<Operand>>)> = vec![
        (
            Op::Split {
                axis: 0,
                num_outputs: 2,
            },
            vec![Some(x)],
        ),
        (Op::Gather { axis: 0 }, vec![Some(x), Some(i)]),
        (Op::Concat { axis: 0 }, vec![Some(x), Some(x)]),
    ];
    for (op, args) in cases {
        let e = infer(&op, &args).unwrap_err();
        assert!(e.contains("of a scalar"), "{op:?}: {e}");
    }
    // Rank 1 still works.
    let v = Operand {
        ty: &vector,
        value: None,
    };
    let t = infer(
        &Op::Split {
            axis: 0,
            num_outputs: 2,
        },
        &[Some(v)],
    )
    .unwrap();
    assert_eq!(t[0].shape, Some(vec![Dim::Known(2)]));
}
