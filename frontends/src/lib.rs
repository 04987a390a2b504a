//! hlstm-frontends: model importers, and ONNX export of the IR. ONNX is the one frontend.

pub mod onnx;
