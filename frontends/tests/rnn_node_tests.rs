//! ONNX LSTM, GRU and RNN: the ONNX backend node tests and the LSTM model fixtures run through
//! the importer and the reference interpreter, plus hand-built models for the attributes those
//! miss, checked against a scalar implementation of the ONNX equations written here.

use hlstm_frontends::onnx::{import_file, import_model, tensor};
use hlstm_ir::{Graph, Op, Tensor, interp};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

// ---------------------------------------------------------------------------------------------
// Comparing and running

fn compare(what: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = match (got.as_f32(), want.as_f32()) {
        (Some(g), Some(w)) => (g, w),
        _ => {
            return if got == want {
                Ok(())
            } else {
                Err(format!("{what}: {got:?}, expected {want:?}"))
            };
        }
    };
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        // Written so that a NaN fails.
        let close = (a - b).abs() <= 1e-4 + 1e-3 * b.abs();
        if !close {
            return Err(format!(
                "{what}: element {i} is {a}, expected {b} (got {:?}, expected {:?})",
                g.iter().collect::<Vec<_>>(),
                w.iter().collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

fn input_names(g: &Graph) -> Vec<String> {
    g.inputs.iter().map(|n| g.node(*n).name.clone()).collect()
}

/// Orders named tensors as the graph's inputs: by name when every name matches, else by position.
fn order_feeds(g: &Graph, feeds: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, String> {
    let names = input_names(g);
    if feeds.len() != names.len() {
        return Err(format!(
            "{} inputs given, the graph takes {names:?}",
            feeds.len()
        ));
    }
    if feeds.iter().all(|(n, _)| names.contains(n)) {
        let mut out = Vec::new();
        for n in &names {
            let t = feeds.iter().find(|(m, _)| m == n).map(|(_, t)| t.clone());
            out.push(t.ok_or_else(|| format!("no value for input '{n}'"))?);
        }
        Ok(out)
    } else {
        Ok(feeds.into_iter().map(|(_, t)| t).collect())
    }
}

fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("{prefix}_{k}.pb"));
        if !p.exists() {
            break;
        }
        out.push(tensor::read_pb(&p)?);
    }
    Ok(out)
}

/// Imports `dir/model.onnx`, runs it on test_data_set_0's inputs and compares every output.
fn check_fixture(dir: &Path) -> Result<(), String> {
    let g = import_file(&dir.join("model.onnx")).map_err(|e| format!("import: {e}"))?;
    let data = dir.join("test_data_set_0");
    let inputs = read_numbered(&data, "input")?;
    let outputs = read_numbered(&data, "output")?;
    let feeds = order_feeds(&g, inputs)?;
    let got = interp::run(&g, &feeds).map_err(|e| format!("run: {e}"))?;
    if got.len() != outputs.len() {
        return Err(format!("{} outputs, expected {}", got.len(), outputs.len()));
    }
    for (k, ((name, want), got)) in outputs.iter().zip(&got).enumerate() {
        compare(&format!("output {k} ({name})"), got, want)?;
    }
    Ok(())
}

fn run_fixture(group: &str, name: &str) {
    let dir = fixtures().join(group).join(name);
    if let Err(e) = check_fixture(&dir) {
        panic!("{group}/{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The ONNX node tests and the model fixtures

const NODE_TESTS: &[&str] = &[
    "test_gru_batchwise",
    "test_gru_bidirectional",
    "test_gru_defaults",
    "test_gru_reverse",
    "test_gru_seq_length",
    "test_gru_with_initial_bias",
    "test_lstm_batchwise",
    "test_lstm_bidirectional",
    "test_lstm_defaults",
    "test_lstm_reverse",
    "test_lstm_with_initial_bias",
    "test_lstm_with_peepholes",
    "test_rnn_seq_length",
    "test_simple_rnn_batchwise",
    "test_simple_rnn_bidirectional",
    "test_simple_rnn_defaults",
    "test_simple_rnn_reverse",
    "test_simple_rnn_with_initial_bias",
];

macro_rules! node_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_fixture("onnx-node", stringify!($name));
            }
        )*
    };
}

node_tests!(
    test_gru_batchwise,
    test_gru_bidirectional,
    test_gru_defaults,
    test_gru_reverse,
    test_gru_seq_length,
    test_gru_with_initial_bias,
    test_lstm_batchwise,
    test_lstm_bidirectional,
    test_lstm_defaults,
    test_lstm_reverse,
    test_lstm_with_initial_bias,
    test_lstm_with_peepholes,
    test_rnn_seq_length,
    test_simple_rnn_batchwise,
    test_simple_rnn_bidirectional,
    test_simple_rnn_defaults,
    test_simple_rnn_reverse,
    test_simple_rnn_with_initial_bias,
);

/// Every recurrent node-test folder has a test above.
#[test]
fn every_recurrent_node_test_is_listed() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures().join("onnx-node"))
        .expect("tests/fixtures/onnx-node")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| ["lstm", "gru", "rnn"].iter().any(|k| n.contains(k)))
        .collect();
    found.sort();
    let mut listed: Vec<String> = NODE_TESTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

macro_rules! model_tests {
    ($($fn_name:ident => $dir:literal),* $(,)?) => {
        $(
            #[test]
            fn $fn_name() {
                run_fixture("models", $dir);
            }
        )*
    };
}

model_tests!(
    model_lstm_std_h64_x32_t8 => "lstm_std_H64_X32_T8",
    model_lstm_std_h64_x32_t8_sp90 => "lstm_std_H64_X32_T8_sp90",
    model_lstm_std_h64_x32_t8_sp97 => "lstm_std_H64_X32_T8_sp97",
    model_lstm_std_x16_h24_t5_batch3 => "lstm_std_X16_H24_T5_batch3",
    model_torch_lstm_h64_x32_t8 => "torch_lstm_H64_X32_T8",
    model_torch_lstm_h64_x32_t8_dynamo => "torch_lstm_H64_X32_T8_dynamo",
);

/// Initializer weights end up as constants inside the cell: no invariant operands.
#[test]
fn initializer_weights_become_body_constants() {
    let g = import_file(&fixtures().join("models/lstm_std_H64_X32_T8/model.onnx")).unwrap();
    let recs: Vec<_> = g
        .nodes
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::Recurrence(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].num_invariant, 0);
    assert_eq!(recs[0].num_carried, 2);
    assert!(!recs[0].has_seq_lens);
}

// ---------------------------------------------------------------------------------------------
// Building models

const FLOAT: i32 = 1;
const INT32: i32 = 6;

/// A tensor value info; `None` dims are symbolic ("batch"), `dims == None` leaves the shape out.
fn vi(name: &str, elem: i32, dims: Option<&[Option<i64>]>) -> ValueInfoProto {
    let dims: Option<Vec<hlstm_ir::Dim>> = dims.map(|ds| {
        ds.iter()
            .map(|d| match d {
                Some(n) => hlstm_ir::Dim::Known(*n as usize),
                None => hlstm_ir::Dim::Sym("batch".into()),
            })
            .collect()
    });
    hlstm_frontends::onnx::export::value_info_proto(name, elem, dims.as_deref())
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.type_ = EnumOrUnknown::new(ty);
    a
}
fn a_int(name: &str, v: i64) -> AttributeProto {
    let mut a = attr(name, AttributeType::INT);
    a.i = v;
    a
}
fn a_float(name: &str, v: f32) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOAT);
    a.f = v;
    a
}
fn a_floats(name: &str, v: &[f32]) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOATS);
    a.floats = v.to_vec();
    a
}
fn a_str(name: &str, v: &str) -> AttributeProto {
    let mut a = attr(name, AttributeType::STRING);
    a.s = v.as_bytes().to_vec();
    a
}
fn a_strs(name: &str, v: &[&str]) -> AttributeProto {
    let mut a = attr(name, AttributeType::STRINGS);
    a.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
    a
}

/// One operand of the node under test.
struct Slot {
    t: Tensor,
    /// An initializer (constant) rather than a graph input.
    init: bool,
}

fn input(t: Tensor) -> Option<Slot> {
    Some(Slot { t, init: false })
}
fn init(t: Tensor) -> Option<Slot> {
    Some(Slot { t, init: true })
}

const SLOT_NAMES: [&str; 8] = [
    "X",
    "W",
    "R",
    "B",
    "sequence_lens",
    "initial_h",
    "initial_c",
    "P",
];

/// A one-node model; returns it with the graph-input feeds. `outs` names the node's outputs
/// ("" for absent ones); every named one is a graph output.
fn one_node(
    op: &str,
    attrs: Vec<AttributeProto>,
    slots: Vec<Option<Slot>>,
    outs: &[&str],
) -> (ModelProto, Vec<(String, Tensor)>) {
    let mut g = GraphProto::new();
    g.name = "g".into();
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = format!("{op}_under_test");
    let mut feeds = Vec::new();
    for (i, s) in slots.into_iter().enumerate() {
        let name = SLOT_NAMES[i];
        match s {
            None => n.input.push(String::new()),
            Some(s) => {
                n.input.push(name.to_string());
                if s.init {
                    g.initializer.push(tensor::encode(name, &s.t));
                } else {
                    let elem = match s.t {
                        Tensor::F32(_) => FLOAT,
                        Tensor::I32(_) => INT32,
                        _ => 7,
                    };
                    let dims: Vec<Option<i64>> =
                        s.t.shape().iter().map(|&d| Some(d as i64)).collect();
                    g.input.push(vi(name, elem, Some(&dims)));
                    feeds.push((name.to_string(), s.t));
                }
            }
        }
    }
    while n.input.last().is_some_and(|s| s.is_empty()) {
        n.input.pop();
    }
    n.output = outs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs;
    g.node.push(n);
    for o in outs.iter().filter(|o| !o.is_empty()) {
        g.output.push(vi(o, FLOAT, None));
    }
    let mut m = ModelProto::new();
    m.ir_version = 10;
    let mut os = OperatorSetIdProto::new();
    os.version = 22;
    m.opset_import.push(os);
    m.graph = MessageField::some(g);
    (m, feeds)
}

fn run_model(m: &ModelProto, feeds: &[(String, Tensor)]) -> Result<Vec<Tensor>, String> {
    let g = import_model(m, None).map_err(|e| format!("import: {e}"))?;
    let feeds = order_feeds(&g, feeds.to_vec())?;
    interp::run(&g, &feeds).map_err(|e| format!("run: {e}"))
}

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape, v).expect("shape matches data")
}

fn lens_t(v: &[i32]) -> Tensor {
    Tensor::I32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.to_vec()).unwrap())
}

fn data(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32").iter().copied().collect()
}

/// Deterministic values in [-scale, scale).
fn rnd(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 33) as f64) / ((1u64 << 31) as f64);
            ((2.0 * u - 1.0) as f32) * scale
        })
        .collect()
}

/// Transposes a row-major array of `shape` by `perm`.
fn permute(v: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = (0..shape.len())
        .map(|i| shape[i + 1..].iter().product())
        .collect();
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let src: usize = (0..perm.len()).map(|k| idx[k] * strides[perm[k]]).sum();
        out.push(v[src]);
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A scalar reference implementation of the ONNX equations

#[derive(Clone, Copy, Debug)]
enum RA {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Affine(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

fn ra(a: RA, x: f32) -> f32 {
    let x = x as f64;
    let y = match a {
        RA::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        RA::Tanh => x.tanh(),
        RA::Relu => x.max(0.0),
        RA::LeakyRelu(al) => {
            if x >= 0.0 {
                x
            } else {
                al as f64 * x
            }
        }
        RA::ThresholdedRelu(al) => {
            if x > al as f64 {
                x
            } else {
                0.0
            }
        }
        RA::ScaledTanh(al, be) => al as f64 * (be as f64 * x).tanh(),
        RA::HardSigmoid(al, be) => (al as f64 * x + be as f64).clamp(0.0, 1.0),
        RA::Affine(al, be) => al as f64 * x + be as f64,
        RA::Elu(al) => {
            if x >= 0.0 {
                x
            } else {
                al as f64 * (x.exp() - 1.0)
            }
        }
        RA::Softsign => x / (1.0 + x.abs()),
        RA::Softplus => (1.0 + x.exp()).ln(),
    };
    y as f32
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum K {
    Lstm,
    Gru { lbr: bool },
    Rnn,
}

impl K {
    fn gates(self) -> usize {
        match self {
            K::Lstm => 4,
            K::Gru { .. } => 3,
            K::Rnn => 1,
        }
    }
}

struct RefCfg {
    kind: K,
    h: usize,
    clip: Option<f32>,
    input_forget: bool,
    /// Activations per direction (f, g, h for LSTM; f, g for GRU; f for RNN).
    acts: Vec<Vec<RA>>,
}

/// Inputs in the layout-0 forms: x [T,B,I], w [nd,G*H,I], r [nd,G*H,H], b [nd,2*G*H],
/// p [nd,3H], h0/c0 [nd,B,H].
struct RefData {
    t: usize,
    b: usize,
    i: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    r: Vec<f32>,
    bias: Option<Vec<f32>>,
    p: Option<Vec<f32>>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
    len: Option<usize>,
}

fn dot(m: &[f32], row: usize, v: &[f32]) -> f32 {
    let n = v.len();
    m[row * n..(row + 1) * n]
        .iter()
        .zip(v)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum::<f64>() as f32
}

/// Runs every direction; returns Y [T,nd,B,H], Y_h [nd,B,H], Y_c [nd,B,H] (layout 0).
fn reference(cfg: &RefCfg, d: &RefData, dirs: &[bool]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (h, g) = (cfg.h, cfg.kind.gates());
    let nd = dirs.len();
    let (tn, bn, inn) = (d.t, d.b, d.i);
    let len = d.len.unwrap_or(tn);
    let cl = |x: f32| match cfg.clip {
        Some(c) => x.clamp(-c, c),
        None => x,
    };
    let mut y = vec![0.0f32; tn * nd * bn * h];
    let mut yh = vec![0.0f32; nd * bn * h];
    let mut yc = vec![0.0f32; nd * bn * h];
    for (di, &rev) in dirs.iter().enumerate() {
        let acts = &cfg.acts[di];
        let w = &d.w[di * g * h * inn..(di + 1) * g * h * inn];
        let r = &d.r[di * g * h * h..(di + 1) * g * h * h];
        let zeros = vec![0.0f32; 2 * g * h];
        let bias = d
            .bias
            .as_ref()
            .map_or(&zeros[..], |b| &b[di * 2 * g * h..(di + 1) * 2 * g * h]);
        let (wb, rb) = bias.split_at(g * h);
        let zp = vec![0.0f32; 3 * h];
        let p =
            d.p.as_ref()
                .map_or(&zp[..], |p| &p[di * 3 * h..(di + 1) * 3 * h]);
        for bi in 0..bn {
            let state = |s: &Option<Vec<f32>>| {
                s.as_ref().map_or(vec![0.0; h], |v| {
                    v[(di * bn + bi) * h..(di * bn + bi + 1) * h].to_vec()
                })
            };
            let mut hs = state(&d.h0);
            let mut cs = state(&d.c0);
            let steps: Vec<usize> = if rev {
                (0..len).rev().collect()
            } else {
                (0..len).collect()
            };
            for ti in steps {
                let x = &d.x[(ti * bn + bi) * inn..(ti * bn + bi + 1) * inn];
                let pre = |gate: usize, j: usize, hv: &[f32]| {
                    dot(w, gate * h + j, x)
                        + dot(r, gate * h + j, hv)
                        + wb[gate * h + j]
                        + rb[gate * h + j]
                };
                let mut hn = vec![0.0f32; h];
                let mut cn = vec![0.0f32; h];
                match cfg.kind {
                    K::Lstm => {
                        for j in 0..h {
                            // Gate order i, o, f, c; peepholes i, o, f.
                            let i = ra(acts[0], cl(pre(0, j, &hs) + p[j] * cs[j]));
                            let f = if cfg.input_forget {
                                1.0 - i
                            } else {
                                ra(acts[0], cl(pre(2, j, &hs) + p[2 * h + j] * cs[j]))
                            };
                            let gg = ra(acts[1], cl(pre(3, j, &hs)));
                            let c = f * cs[j] + i * gg;
                            let o = ra(acts[0], cl(pre(1, j, &hs) + p[h + j] * c));
                            cn[j] = c;
                            hn[j] = o * ra(acts[2], c);
                        }
                    }
                    K::Gru { lbr } => {
                        let z: Vec<f32> = (0..h).map(|j| ra(acts[0], cl(pre(0, j, &hs)))).collect();
                        let rg: Vec<f32> =
                            (0..h).map(|j| ra(acts[0], cl(pre(1, j, &hs)))).collect();
                        let rh: Vec<f32> = (0..h).map(|j| rg[j] * hs[j]).collect();
                        for j in 0..h {
                            let row = 2 * h + j;
                            let rec = if lbr {
                                rg[j] * (dot(r, row, &hs) + rb[row])
                            } else {
                                dot(r, row, &rh) + rb[row]
                            };
                            let ht = ra(acts[1], cl(dot(w, row, x) + wb[row] + rec));
                            hn[j] = (1.0 - z[j]) * ht + z[j] * hs[j];
                        }
                    }
                    K::Rnn => {
                        for (j, hj) in hn.iter_mut().enumerate() {
                            *hj = ra(acts[0], cl(pre(0, j, &hs)));
                        }
                    }
                }
                hs = hn;
                cs = cn;
                let at = ((ti * nd + di) * bn + bi) * h;
                y[at..at + h].copy_from_slice(&hs);
            }
            let at = (di * bn + bi) * h;
            yh[at..at + h].copy_from_slice(&hs);
            yc[at..at + h].copy_from_slice(&cs);
        }
    }
    (y, yh, yc)
}

/// Random data for a case.
fn ref_data(kind: K, nd: usize, t: usize, b: usize, i: usize, h: usize, seed: u64) -> RefData {
    let g = kind.gates();
    RefData {
        t,
        b,
        i,
        x: rnd(t * b * i, seed, 1.0),
        w: rnd(nd * g * h * i, seed + 1, 0.6),
        r: rnd(nd * g * h * h, seed + 2, 0.6),
        bias: Some(rnd(nd * 2 * g * h, seed + 3, 0.4)),
        p: None,
        h0: Some(rnd(nd * b * h, seed + 4, 0.5)),
        c0: if kind == K::Lstm {
            Some(rnd(nd * b * h, seed + 5, 0.5))
        } else {
            None
        },
        len: None,
    }
}

/// Builds, imports and runs a model for `d` with the given attributes and layout; compares
/// with the reference. `weights_init` makes W, R, B, P initializers. `runtime_lens` passes
/// sequence_lens as a graph input (else as an initializer) when `d.len` is set.
#[allow(clippy::too_many_arguments)]
fn check_case(
    op: &str,
    cfg: &RefCfg,
    d: &RefData,
    direction: &str,
    layout: i64,
    mut attrs: Vec<AttributeProto>,
    weights_init: bool,
    runtime_lens: bool,
) -> Vec<Tensor> {
    let dirs: Vec<bool> = match direction {
        "forward" => vec![false],
        "reverse" => vec![true],
        _ => vec![false, true],
    };
    let nd = dirs.len();
    let (tn, bn, inn, h, g) = (d.t, d.b, d.i, cfg.h, cfg.kind.gates());
    attrs.push(a_int("hidden_size", h as i64));
    attrs.push(a_str("direction", direction));
    if layout != 0 {
        attrs.push(a_int("layout", layout));
    }
    let wslot = |t: Tensor| if weights_init { init(t) } else { input(t) };
    let x = if layout == 0 {
        t(&[tn, bn, inn], d.x.clone())
    } else {
        t(&[bn, tn, inn], permute(&d.x, &[tn, bn, inn], &[1, 0, 2]))
    };
    let state = |v: &Option<Vec<f32>>| {
        v.as_ref().map(|v| {
            if layout == 0 {
                t(&[nd, bn, h], v.clone())
            } else {
                t(&[bn, nd, h], permute(v, &[nd, bn, h], &[1, 0, 2]))
            }
        })
    };
    let mut slots = vec![
        input(x),
        wslot(t(&[nd, g * h, inn], d.w.clone())),
        wslot(t(&[nd, g * h, h], d.r.clone())),
        d.bias
            .as_ref()
            .and_then(|b| wslot(t(&[nd, 2 * g * h], b.clone()))),
        d.len.and_then(|l| {
            let lt = lens_t(&vec![l as i32; bn]);
            if runtime_lens { input(lt) } else { init(lt) }
        }),
        state(&d.h0).and_then(input),
    ];
    let mut outs = vec!["Y", "Y_h"];
    if cfg.kind == K::Lstm {
        slots.push(state(&d.c0).and_then(input));
        slots.push(d.p.as_ref().and_then(|p| wslot(t(&[nd, 3 * h], p.clone()))));
        outs.push("Y_c");
    }
    let (m, feeds) = one_node(op, attrs, slots, &outs);
    let got = run_model(&m, &feeds).unwrap_or_else(|e| panic!("{op}: {e}"));
    let (y, yh, yc) = reference(cfg, d, &dirs);
    let (want_y, want_h, want_c) = if layout == 0 {
        (
            t(&[tn, nd, bn, h], y),
            t(&[nd, bn, h], yh),
            t(&[nd, bn, h], yc),
        )
    } else {
        (
            t(
                &[bn, tn, nd, h],
                permute(&y, &[tn, nd, bn, h], &[2, 0, 1, 3]),
            ),
            t(&[bn, nd, h], permute(&yh, &[nd, bn, h], &[1, 0, 2])),
            t(&[bn, nd, h], permute(&yc, &[nd, bn, h], &[1, 0, 2])),
        )
    };
    compare("Y", &got[0], &want_y).unwrap();
    compare("Y_h", &got[1], &want_h).unwrap();
    if cfg.kind == K::Lstm {
        compare("Y_c", &got[2], &want_c).unwrap();
    }
    got
}

fn lstm_cfg(h: usize, nd: usize) -> RefCfg {
    RefCfg {
        kind: K::Lstm,
        h,
        clip: None,
        input_forget: false,
        acts: vec![vec![RA::Sigmoid, RA::Tanh, RA::Tanh]; nd],
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-built LSTM cases

#[test]
fn reference_matches_lstm_node_test_defaults() {
    // The reference itself against an ONNX node test (W = R = 0.1, X = 1..6, zero bias).
    let dir = fixtures().join("onnx-node/test_lstm_defaults/test_data_set_0");
    let ins = read_numbered(&dir, "input").unwrap();
    let outs = read_numbered(&dir, "output").unwrap();
    let (x, w, r) = (&ins[0].1, &ins[1].1, &ins[2].1);
    let d = RefData {
        t: x.shape()[0],
        b: x.shape()[1],
        i: x.shape()[2],
        x: data(x),
        w: data(w),
        r: data(r),
        bias: None,
        p: None,
        h0: None,
        c0: None,
        len: None,
    };
    let (_, yh, _) = reference(&lstm_cfg(3, 1), &d, &[false]);
    compare("Y_h", &t(&[1, d.b, 3], yh), &outs[0].1).unwrap();
}

#[test]
fn lstm_layout1_runtime_weights() {
    let d = ref_data(K::Lstm, 1, 4, 2, 3, 5, 10);
    check_case(
        "LSTM",
        &lstm_cfg(5, 1),
        &d,
        "forward",
        1,
        vec![],
        false,
        false,
    );
}

#[test]
fn lstm_layout1_bidirectional_constant_weights() {
    let d = ref_data(K::Lstm, 2, 3, 2, 4, 3, 20);
    check_case(
        "LSTM",
        &lstm_cfg(3, 2),
        &d,
        "bidirectional",
        1,
        vec![],
        true,
        false,
    );
}

#[test]
fn lstm_clip() {
    let mut cfg = lstm_cfg(4, 1);
    cfg.clip = Some(0.25);
    let mut d = ref_data(K::Lstm, 1, 5, 2, 3, 4, 30);
    d.x = rnd(5 * 2 * 3, 31, 3.0);
    for w_init in [false, true] {
        check_case(
            "LSTM",
            &cfg,
            &d,
            "forward",
            0,
            vec![a_float("clip", 0.25)],
            w_init,
            false,
        );
    }
    // Without the clip attribute the result differs (the clip is live in this case).
    let mut plain = lstm_cfg(4, 1);
    plain.clip = None;
    let (y1, _, _) = reference(&cfg, &d, &[false]);
    let (y2, _, _) = reference(&plain, &d, &[false]);
    assert!(y1.iter().zip(&y2).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn lstm_input_forget() {
    let mut cfg = lstm_cfg(4, 1);
    cfg.input_forget = true;
    let d = ref_data(K::Lstm, 1, 4, 2, 3, 4, 40);
    check_case(
        "LSTM",
        &cfg,
        &d,
        "forward",
        0,
        vec![a_int("input_forget", 1)],
        true,
        false,
    );
    // With peepholes too (the forget peephole is unused then).
    let mut d = ref_data(K::Lstm, 2, 4, 2, 3, 4, 41);
    d.p = Some(rnd(2 * 3 * 4, 42, 0.5));
    let mut cfg = lstm_cfg(4, 2);
    cfg.input_forget = true;
    check_case(
        "LSTM",
        &cfg,
        &d,
        "bidirectional",
        0,
        vec![a_int("input_forget", 1)],
        false,
        false,
    );
}

#[test]
fn lstm_activations_with_alpha_beta() {
    // LeakyRelu takes alpha 0.1; ScaledTanh alpha 0.7, beta 1.3; HardSigmoid alpha 0.3, beta 0.4.
    let mut cfg = lstm_cfg(4, 1);
    cfg.acts = vec![vec![
        RA::HardSigmoid(0.3, 0.4),
        RA::ScaledTanh(0.7, 1.3),
        RA::LeakyRelu(0.1),
    ]];
    let d = ref_data(K::Lstm, 1, 4, 2, 3, 4, 50);
    let attrs = vec![
        a_strs("activations", &["HardSigmoid", "ScaledTanh", "LeakyRelu"]),
        a_floats("activation_alpha", &[0.3, 0.7, 0.1]),
        a_floats("activation_beta", &[0.4, 1.3]),
    ];
    check_case("LSTM", &cfg, &d, "forward", 0, attrs, false, false);
}

#[test]
fn lstm_activation_defaults_and_bidirectional_lists() {
    // Parameters missing from the lists take the ONNX defaults: LeakyRelu 0.01, Elu 1.0,
    // ThresholdedRelu 1.0, Affine 1.0/0.0, HardSigmoid 0.2/0.5, ScaledTanh 1.0/1.0.
    let mut cfg = lstm_cfg(3, 2);
    cfg.acts = vec![
        vec![RA::Sigmoid, RA::Elu(0.5), RA::Softsign],
        vec![
            RA::HardSigmoid(0.2, 0.5),
            RA::Affine(1.0, 0.0),
            RA::Softplus,
        ],
    ];
    let d = ref_data(K::Lstm, 2, 3, 2, 3, 3, 60);
    let attrs = vec![
        a_strs(
            "activations",
            &[
                "sigmoid",
                "Elu",
                "Softsign",
                "HardSigmoid",
                "Affine",
                "Softplus",
            ],
        ),
        a_floats("activation_alpha", &[0.5]),
    ];
    check_case("LSTM", &cfg, &d, "bidirectional", 0, attrs, true, false);

    let mut cfg = lstm_cfg(3, 1);
    cfg.acts = vec![vec![
        RA::Sigmoid,
        RA::ThresholdedRelu(1.0),
        RA::ScaledTanh(1.0, 1.0),
    ]];
    let mut d = ref_data(K::Lstm, 1, 3, 2, 3, 3, 61);
    d.x = rnd(3 * 2 * 3, 62, 4.0);
    let attrs = vec![a_strs(
        "activations",
        &["Sigmoid", "ThresholdedRelu", "ScaledTanh"],
    )];
    check_case("LSTM", &cfg, &d, "forward", 0, attrs, false, false);

    let mut cfg = lstm_cfg(3, 1);
    cfg.acts = vec![vec![RA::Sigmoid, RA::Relu, RA::LeakyRelu(0.01)]];
    let attrs = vec![a_strs("activations", &["Sigmoid", "Relu", "LeakyRelu"])];
    check_case("LSTM", &cfg, &d, "forward", 0, attrs, false, false);
}

#[test]
fn lstm_bidirectional_peepholes() {
    let mut d = ref_data(K::Lstm, 2, 5, 3, 4, 3, 70);
    d.p = Some(rnd(2 * 3 * 3, 71, 0.8));
    for w_init in [false, true] {
        check_case(
            "LSTM",
            &lstm_cfg(3, 2),
            &d,
            "bidirectional",
            0,
            vec![],
            w_init,
            false,
        );
    }
}

/// Runs with sequence_lens < T and checks the zero padding and Y_h = Y at the last step run.
fn check_short_lens(direction: &str, layout: i64, runtime: bool) {
    let nd = if direction == "bidirectional" { 2 } else { 1 };
    let (tn, bn, h, l) = (5, 2, 3, 3);
    let mut d = ref_data(K::Lstm, nd, tn, bn, 2, h, 80 + layout as u64);
    d.len = Some(l);
    d.p = Some(rnd(nd * 3 * h, 81, 0.5));
    let got = check_case(
        "LSTM",
        &lstm_cfg(h, nd),
        &d,
        direction,
        layout,
        vec![],
        false,
        runtime,
    );
    // Back to layout 0 to read the steps.
    let y = if layout == 0 {
        data(&got[0])
    } else {
        permute(&data(&got[0]), &[bn, tn, nd, h], &[1, 2, 0, 3])
    };
    let yh = if layout == 0 {
        data(&got[1])
    } else {
        permute(&data(&got[1]), &[bn, nd, h], &[1, 0, 2])
    };
    let step = |ti: usize, di: usize| &y[(ti * nd + di) * bn * h..(ti * nd + di + 1) * bn * h];
    for di in 0..nd {
        for ti in l..tn {
            assert!(
                step(ti, di).iter().all(|v| *v == 0.0),
                "step {ti} is not zero"
            );
        }
        let reverse = direction == "reverse" || di == 1;
        let last = if reverse { 0 } else { l - 1 };
        assert_eq!(step(last, di), &yh[di * bn * h..(di + 1) * bn * h]);
    }
}

#[test]
fn lstm_seq_lens_runtime_forward() {
    check_short_lens("forward", 0, true);
}

#[test]
fn lstm_seq_lens_runtime_reverse() {
    check_short_lens("reverse", 0, true);
}

#[test]
fn lstm_seq_lens_runtime_bidirectional_layout1() {
    check_short_lens("bidirectional", 1, true);
}

#[test]
fn lstm_seq_lens_constant() {
    check_short_lens("reverse", 0, false);
    check_short_lens("forward", 1, false);
}

#[test]
fn lstm_seq_lens_constant_full_length_is_dropped() {
    let (tn, bn, h) = (3, 2, 2);
    let mut d = ref_data(K::Lstm, 1, tn, bn, 2, h, 90);
    d.len = Some(tn);
    check_case(
        "LSTM",
        &lstm_cfg(h, 1),
        &d,
        "forward",
        0,
        vec![],
        true,
        false,
    );
}

#[test]
fn lstm_hidden_size_inferred_and_optional_outputs() {
    let d = ref_data(K::Lstm, 1, 3, 2, 3, 4, 100);
    let (y, yh, yc) = reference(&lstm_cfg(4, 1), &d, &[false]);
    let slots = || {
        vec![
            input(t(&[3, 2, 3], d.x.clone())),
            input(t(&[1, 16, 3], d.w.clone())),
            init(t(&[1, 16, 4], d.r.clone())),
            input(t(&[1, 32], d.bias.clone().unwrap())),
            None,
            input(t(&[1, 2, 4], d.h0.clone().unwrap())),
            input(t(&[1, 2, 4], d.c0.clone().unwrap())),
        ]
    };
    // No hidden_size attribute; only Y_c requested.
    let (m, feeds) = one_node("LSTM", vec![], slots(), &["", "", "Y_c"]);
    let got = run_model(&m, &feeds).unwrap();
    assert_eq!(got.len(), 1);
    compare("Y_c", &got[0], &t(&[1, 2, 4], yc)).unwrap();
    // Only Y.
    let (m, feeds) = one_node("LSTM", vec![], slots(), &["Y"]);
    let got = run_model(&m, &feeds).unwrap();
    compare("Y", &got[0], &t(&[3, 1, 2, 4], y)).unwrap();
    // Y_h and Y_c, no Y: the recurrence has no per-step output then.
    let (m, feeds) = one_node("LSTM", vec![], slots(), &["", "Y_h", "Y_c"]);
    let g = import_model(&m, None).unwrap();
    for n in g.nodes.node_weights() {
        if let Op::Recurrence(r) = &n.op {
            assert_eq!(r.num_step_outputs(), 0);
        }
    }
    let got = run_model(&m, &feeds).unwrap();
    compare("Y_h", &got[0], &t(&[1, 2, 4], yh)).unwrap();
}

#[test]
fn lstm_symbolic_batch_without_initial_state() {
    let mut d = ref_data(K::Lstm, 1, 3, 2, 3, 4, 110);
    d.h0 = None;
    d.c0 = None;
    let (y, yh, _) = reference(&lstm_cfg(4, 1), &d, &[false]);
    let slots = vec![
        input(t(&[3, 2, 3], d.x.clone())),
        init(t(&[1, 16, 3], d.w.clone())),
        init(t(&[1, 16, 4], d.r.clone())),
        init(t(&[1, 32], d.bias.clone().unwrap())),
    ];
    let (mut m, feeds) = one_node("LSTM", vec![a_int("hidden_size", 4)], slots, &["Y", "Y_h"]);
    // Declare X as [3, batch, 3].
    m.graph.as_mut().unwrap().input[0] = vi("X", FLOAT, Some(&[Some(3), None, Some(3)]));
    let got = run_model(&m, &feeds).unwrap();
    compare("Y", &got[0], &t(&[3, 1, 2, 4], y)).unwrap();
    compare("Y_h", &got[1], &t(&[1, 2, 4], yh)).unwrap();
    // Another batch size through the same graph.
    let d3 = RefData {
        b: 5,
        x: rnd(3 * 5 * 3, 111, 1.0),
        ..ref_data(K::Lstm, 1, 3, 5, 3, 4, 110)
    };
    let d3 = RefData {
        h0: None,
        c0: None,
        ..d3
    };
    let (_, yh3, _) = reference(&lstm_cfg(4, 1), &d3, &[false]);
    let got = run_model(&m, &[("X".to_string(), t(&[3, 5, 3], d3.x.clone()))]).unwrap();
    compare("Y_h", &got[1], &t(&[1, 5, 4], yh3)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// GRU and RNN

fn gru_cfg(h: usize, nd: usize, lbr: bool) -> RefCfg {
    RefCfg {
        kind: K::Gru { lbr },
        h,
        clip: None,
        input_forget: false,
        acts: vec![vec![RA::Sigmoid, RA::Tanh]; nd],
    }
}

#[test]
fn gru_linear_before_reset() {
    for lbr in [false, true] {
        let d = ref_data(K::Gru { lbr }, 2, 4, 2, 3, 5, 120);
        let attrs = vec![a_int("linear_before_reset", lbr as i64)];
        for w_init in [false, true] {
            check_case(
                "GRU",
                &gru_cfg(5, 2, lbr),
                &d,
                "bidirectional",
                0,
                attrs.clone(),
                w_init,
                false,
            );
        }
    }
}

#[test]
fn gru_layout1_clip_activations_seq_lens() {
    for lbr in [false, true] {
        let mut cfg = gru_cfg(3, 1, lbr);
        cfg.clip = Some(0.5);
        cfg.acts = vec![vec![RA::HardSigmoid(0.25, 0.5), RA::Softsign]];
        let mut d = ref_data(K::Gru { lbr }, 1, 5, 2, 3, 3, 130);
        d.x = rnd(5 * 2 * 3, 131, 2.0);
        d.len = Some(3);
        let attrs = vec![
            a_int("linear_before_reset", lbr as i64),
            a_float("clip", 0.5),
            a_strs("activations", &["HardSigmoid", "Softsign"]),
            a_floats("activation_alpha", &[0.25]),
        ];
        check_case("GRU", &cfg, &d, "reverse", 1, attrs, lbr, true);
    }
}

#[test]
fn rnn_activation_clip_reverse() {
    let cfg = RefCfg {
        kind: K::Rnn,
        h: 4,
        clip: Some(0.8),
        input_forget: false,
        acts: vec![vec![RA::LeakyRelu(0.2)]],
    };
    let d = ref_data(K::Rnn, 1, 4, 3, 2, 4, 140);
    let attrs = vec![
        a_float("clip", 0.8),
        a_strs("activations", &["LeakyRelu"]),
        a_floats("activation_alpha", &[0.2]),
    ];
    check_case("RNN", &cfg, &d, "reverse", 0, attrs, true, false);
}

#[test]
fn rnn_bidirectional_layout1_seq_lens() {
    let cfg = RefCfg {
        kind: K::Rnn,
        h: 3,
        clip: None,
        input_forget: false,
        acts: vec![vec![RA::Relu], vec![RA::Tanh]],
    };
    let mut d = ref_data(K::Rnn, 2, 4, 2, 3, 3, 150);
    d.len = Some(2);
    let attrs = vec![a_strs("activations", &["Relu", "Tanh"])];
    check_case("RNN", &cfg, &d, "bidirectional", 1, attrs, false, true);
}

#[test]
fn rnn_default_activation_list_written_out() {
    // A forward RNN with the schema's default ["Tanh", "Tanh"] written out.
    let cfg = RefCfg {
        kind: K::Rnn,
        h: 3,
        clip: None,
        input_forget: false,
        acts: vec![vec![RA::Tanh]],
    };
    let d = ref_data(K::Rnn, 1, 3, 2, 3, 3, 160);
    let attrs = vec![a_strs("activations", &["Tanh", "Tanh"])];
    check_case("RNN", &cfg, &d, "forward", 0, attrs, false, false);
}

// ---------------------------------------------------------------------------------------------
// Errors

fn import_err(op: &str, attrs: Vec<AttributeProto>, slots: Vec<Option<Slot>>) -> String {
    let (m, _) = one_node(op, attrs, slots, &["Y"]);
    match import_model(&m, None) {
        Ok(_) => panic!("the import should fail"),
        Err(e) => e.to_string(),
    }
}

fn z(shape: &[usize]) -> Tensor {
    Tensor::zeros(hlstm_ir::DType::F32, shape)
}

#[test]
fn bad_weight_shapes_are_errors() {
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 10, 4])),
            input(z(&[1, 12, 3])),
        ],
    );
    assert!(e.contains("W must have shape"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            init(z(&[1, 12, 4])),
            init(z(&[1, 12, 2])),
        ],
    );
    assert!(e.contains("R must have shape"), "{e}");
    let e = import_err(
        "GRU",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 9, 5])),
            input(z(&[1, 9, 3])),
        ],
    );
    assert!(e.contains("W must have shape"), "{e}");
    let e = import_err(
        "RNN",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 3, 4])),
            input(z(&[1, 3, 3])),
            input(z(&[1, 5])),
        ],
    );
    assert!(e.contains("B must have shape"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3), a_str("direction", "bidirectional")],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 12, 4])),
            input(z(&[1, 12, 3])),
        ],
    );
    assert!(e.contains("num_directions"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 12, 4])),
            input(z(&[1, 12, 3])),
            None,
            None,
            None,
            None,
            input(z(&[1, 6])),
        ],
    );
    assert!(e.contains("P must have shape"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 12, 4])),
            input(z(&[1, 12, 3])),
            None,
            None,
            input(z(&[1, 2, 3])),
        ],
    );
    assert!(e.contains("initial_h must have shape"), "{e}");
}

#[test]
fn bad_attributes_are_errors() {
    let slots = || {
        vec![
            input(z(&[2, 1, 4])),
            input(z(&[1, 12, 4])),
            input(z(&[1, 12, 3])),
        ]
    };
    let e = import_err(
        "LSTM",
        vec![
            a_int("hidden_size", 3),
            a_strs("activations", &["Sigmoid", "Tanh", "Swish"]),
        ],
        slots(),
    );
    assert!(e.contains("unknown activation 'Swish'"), "{e}");
    let e = import_err(
        "LSTM",
        vec![
            a_int("hidden_size", 3),
            a_strs("activations", &["Sigmoid", "Tanh"]),
        ],
        slots(),
    );
    assert!(e.contains("activations"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3), a_str("direction", "sideways")],
        slots(),
    );
    assert!(e.contains("direction 'sideways'"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3), a_int("layout", 2)],
        slots(),
    );
    assert!(e.contains("layout"), "{e}");
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3), a_float("clip", -1.0)],
        slots(),
    );
    assert!(e.contains("clip"), "{e}");
    // Unequal constant sequence lengths.
    let e = import_err(
        "LSTM",
        vec![a_int("hidden_size", 3)],
        vec![
            input(z(&[2, 2, 4])),
            input(z(&[1, 12, 4])),
            input(z(&[1, 12, 3])),
            None,
            init(lens_t(&[1, 2])),
        ],
    );
    assert!(e.contains("sequence_lens"), "{e}");
    // Too few inputs.
    let e = import_err(
        "GRU",
        vec![a_int("hidden_size", 3)],
        vec![input(z(&[2, 1, 4]))],
    );
    assert!(e.contains("W"), "{e}");
}

#[test]
fn unequal_runtime_lengths_fail_at_run_time() {
    let d = ref_data(K::Lstm, 1, 3, 2, 3, 2, 170);
    let slots = vec![
        input(t(&[3, 2, 3], d.x.clone())),
        input(t(&[1, 8, 3], d.w.clone())),
        input(t(&[1, 8, 2], d.r.clone())),
        None,
        input(lens_t(&[1, 2])),
    ];
    let (m, feeds) = one_node("LSTM", vec![a_int("hidden_size", 2)], slots, &["Y"]);
    let e = run_model(&m, &feeds).unwrap_err();
    assert!(e.contains("sequence_lens"), "{e}");
}

/// A single direction's constant `W` and `R` are moved out of the graph, not copied, when no
/// later node reads them (`Ctx::take_unread_const`, BENCHMARKS.md "Memory"). Weights that a
/// later node, a graph output or another operand of the same node still reads must stay, with
/// their values.
#[test]
fn lstm_weights_read_elsewhere_are_not_moved() {
    let (tn, bn, h) = (4, 2, 3);
    // Input size = hidden size, so that one tensor can be both W and R; no bias or initial
    // state (the node below has W and R only).
    let bare = |seed| RefData {
        bias: None,
        h0: None,
        c0: None,
        ..ref_data(K::Lstm, 1, tn, bn, h, h, seed)
    };
    let d = bare(40);
    let cfg = lstm_cfg(h, 1);
    let hs = a_int("hidden_size", h as i64);
    let x = t(&[tn, bn, h], d.x.clone());
    let (w, r) = (
        t(&[1, 4 * h, h], d.w.clone()),
        t(&[1, 4 * h, h], d.r.clone()),
    );
    let (y, _, _) = reference(&cfg, &d, &[false]);
    let want_y = t(&[tn, 1, bn, h], y);

    // W read again by a later node, R a graph output.
    let (mut m, feeds) = one_node(
        "LSTM",
        vec![hs.clone()],
        vec![input(x.clone()), init(w.clone()), init(r.clone())],
        &["Y"],
    );
    let g = m.graph.as_mut().unwrap();
    let mut copy = NodeProto::new();
    copy.op_type = "Identity".into();
    copy.name = "reads_W_after".into();
    copy.input.push("W".into());
    copy.output.push("W_again".into());
    g.node.push(copy);
    g.output.push(vi("W_again", FLOAT, None));
    g.output.push(vi("R", FLOAT, None));
    let got = run_model(&m, &feeds).unwrap();
    compare("Y", &got[0], &want_y).unwrap();
    compare("W_again", &got[1], &w).unwrap();
    compare("R", &got[2], &r).unwrap();

    // One initializer as both W and R.
    let mut same = bare(40);
    same.r = same.w.clone();
    let (y, _, _) = reference(&cfg, &same, &[false]);
    let (mut m, feeds) = one_node("LSTM", vec![hs], vec![input(x), init(w)], &["Y"]);
    m.graph.as_mut().unwrap().node[0].input.push("W".into());
    let got = run_model(&m, &feeds).unwrap();
    compare("Y", &got[0], &t(&[tn, 1, bn, h], y)).unwrap();
}
