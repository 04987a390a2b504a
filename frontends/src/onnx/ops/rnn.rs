//! LSTM, GRU and RNN expanded into `recurrence` (in progress).

use crate::onnx::ctx::Ctx;
use hlstm_ir::Value;
use onnx_protobuf::NodeProto;

pub fn lstm(_: &mut Ctx, _: &NodeProto, _: &str, _: &[Option<Value>]) -> Result<Vec<Value>, String> {
    Err("LSTM import is not implemented yet".into())
}

pub fn gru(_: &mut Ctx, _: &NodeProto, _: &str, _: &[Option<Value>]) -> Result<Vec<Value>, String> {
    Err("GRU import is not implemented yet".into())
}

pub fn rnn(_: &mut Ctx, _: &NodeProto, _: &str, _: &[Option<Value>]) -> Result<Vec<Value>, String> {
    Err("RNN import is not implemented yet".into())
}
