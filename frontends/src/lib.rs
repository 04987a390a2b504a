//! hlstm-frontends: model importers. ONNX is the one frontend.

pub mod onnx;
