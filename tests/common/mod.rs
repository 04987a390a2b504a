//! Helpers for integration tests: building small ONNX models in code and running the CLI.
#![allow(dead_code)]

pub mod fake_cuda;

use hlstm_ir::Dim;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, ValueInfoProto,
};
use protobuf::Message;
use std::path::Path;
use std::process::{Command, Output};

pub fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d as usize)).collect();
    hlstm_frontends::onnx::export::value_info_proto(name, elem_type, Some(&dims))
}

pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 7;
    t.int64_data = data.to_vec();
    t
}

/// A path in the repository, as a string for the command line.
pub fn repo_path(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name.to_string();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.i = v;
    a.type_ = protobuf::EnumOrUnknown::from_i32(2);
    a
}

pub fn model(
    opset: i64,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "test".into();
    g.input = inputs;
    g.output = outputs;
    g.initializer = inits;
    g.node = nodes;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut os = OperatorSetIdProto::new();
    os.version = opset;
    m.opset_import.push(os);
    m.graph = Some(g).into();
    m
}

/// A model computing Y = X · W + B with X [2, 3], W [3, 4] from initializers.
pub fn linear_model() -> ModelProto {
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.0).collect();
    model(
        17,
        vec![value_info("X", 1, &[2, 3])],
        vec![value_info("Y", 1, &[2, 4])],
        vec![
            f32_tensor("W", &[3, 4], &w),
            f32_tensor("B", &[4], &[1.0, 2.0, 3.0, 4.0]),
        ],
        vec![
            node("MatMul", "mm", &["X", "W"], &["XW"]),
            node("Add", "add", &["XW", "B"], &["Y"]),
        ],
    )
}

pub fn external(
    location: &str,
    offset: Option<u64>,
    length: Option<u64>,
) -> Vec<StringStringEntryProto> {
    let mut v = Vec::new();
    let mut kv = |k: &str, val: String| {
        let mut e = StringStringEntryProto::new();
        e.key = k.to_string();
        e.value = val;
        v.push(e);
    };
    kv("location", location.to_string());
    if let Some(o) = offset {
        kv("offset", o.to_string());
    }
    if let Some(l) = length {
        kv("length", l.to_string());
    }
    v
}

pub fn save(m: &ModelProto, path: &Path) {
    std::fs::write(path, m.write_to_bytes().expect("serializes")).expect("writes model");
}

pub fn hlstmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .expect("the hlstmc binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) {
    use npyz::WriterBuilder;
    let f = std::fs::File::create(path).expect("creates npy");
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(f)
        .begin_nd()
        .expect("npy header");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy finish");
}

/// The tensors `DIR/test_data_set_0/PREFIX_K.pb` (K = 0, 1, ...) as f32 (integer sequence
/// lengths as whole numbers, as the kernel IR engines take them).
pub fn read_test_data_f32(dir: &Path, prefix: &str) -> Vec<Vec<f32>> {
    (0..)
        .map(|k| dir.join("test_data_set_0").join(format!("{prefix}_{k}.pb")))
        .take_while(|f| f.exists())
        .map(|f| {
            let (_, t) = hlstm_frontends::onnx::tensor::read_pb(&f).expect("reads the tensor");
            match t.cast(hlstm_ir::DType::F32) {
                hlstm_ir::Tensor::F32(a) => a.iter().copied().collect(),
                _ => unreachable!("cast to f32"),
            }
        })
        .collect()
}

/// Fixes a graph's open input dims (a symbolic batch: the Keras, dynamo and paddle exports) to
/// the shapes of the fixture's test data, as `--shape` would; a static graph is left as is.
pub fn bind_test_data_shapes(g: &mut hlstm_ir::Graph, fixture: &Path) -> Result<(), String> {
    if g.inputs
        .iter()
        .all(|n| g.nodes[*n].results[0].ty.concrete().is_some())
    {
        return Ok(());
    }
    let mut shapes = Vec::new();
    for (k, n) in g.inputs.iter().enumerate() {
        let pb = fixture.join(format!("test_data_set_0/input_{k}.pb"));
        let (_, t) = hlstm_frontends::onnx::tensor::read_pb(&pb)?;
        shapes.push((g.nodes[*n].name.clone(), t.shape().to_vec()));
    }
    hlstm_ir::bind_input_shapes(g, &shapes)
}
