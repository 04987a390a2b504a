//! hlstm-ir: the graph IR of hlstmc, its text form, verifier and reference interpreter.

pub mod graph;
pub mod interp;
pub mod kernel;
pub mod limits;
pub mod op;
pub mod precision;
pub mod rng;
pub mod shape;
pub mod sparsity;
pub mod specialize;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod timing;
pub mod verify;

pub use graph::{Graph, Node, Port, Value, ValueInfo};
pub use op::{Act, BinOp, CmpOp, Constant, LogicOp, Op, Recurrence};
pub use precision::{StoredType, StoredTypes};
pub use sparsity::Sparsity;
pub use specialize::bind_input_shapes;
pub use tensor::{DType, Dim, Tensor, TensorType, dims_text};
