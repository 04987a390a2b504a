//! numpy matmul with 1-D operands: a vector times a vector is a scalar (this panicked once,
//! when the two unit axes were dropped in the wrong order).

use hlstm_ir::Tensor;
use hlstm_ir::interp::kernels::matmul;

#[test]
fn vector_times_vector_is_a_scalar() {
    let a = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]).unwrap();
    let b = Tensor::from_f32(&[3], vec![4.0, 5.0, 6.0]).unwrap();
    let r = matmul(&a, &b).unwrap();
    assert_eq!(r, Tensor::scalar_f32(32.0));
}

#[test]
fn vector_times_matrix_and_matrix_times_vector() {
    let v = Tensor::from_f32(&[2], vec![1.0, -1.0]).unwrap();
    let m = Tensor::from_f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(
        matmul(&v, &m).unwrap(),
        Tensor::from_f32(&[2], vec![-2.0, -2.0]).unwrap()
    );
    assert_eq!(
        matmul(&m, &v).unwrap(),
        Tensor::from_f32(&[2], vec![-1.0, -1.0]).unwrap()
    );
}
