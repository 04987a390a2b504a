//! The model builders: forward graphs against an independent scalar H-LSTM, and gradients of
//! every parameter of small H-LSTM and stacked-LSTM models against finite differences.

mod common;

use hlstm_ir::{DType, Dim, Tensor, interp};
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, Model, ModelConfig};
use hlstm_trainer::rng::Rng;
use hlstm_trainer::{Options, SaveMode};

fn hlstm(layers: usize, width: usize) -> CellKind {
    CellKind::Hlstm {
        hidden_layers: layers,
        hidden_width: width,
    }
}

fn classifier(cell: CellKind, layers: usize, dropout: bool) -> ModelConfig {
    ModelConfig {
        cell,
        input: InputKind::Features { size: 3 },
        head: Head::Classifier { classes: 4 },
        layers,
        hidden: 3,
        dropout,
    }
}

/// Inputs for `model` built with known dims: random data and labels, zero states, dropout
/// masks with p = 0.3, and the model's initial parameters.
fn feed(model: &Model, cfg: &ModelConfig, t: usize, n: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let mut inputs = Vec::new();
    let (classes, per_step) = match cfg.head {
        Head::Classifier { classes } => (classes, false),
        Head::NextToken { vocab } => (vocab, true),
    };
    match cfg.input {
        InputKind::Features { size } => {
            inputs.push(Tensor::from_f32(&[t, n, size], rng.vec(t * n * size, 0.0, 1.0)).unwrap())
        }
        InputKind::Tokens { vocab, .. } => {
            let ids = (0..t * n).map(|_| rng.below(vocab) as i64).collect();
            inputs.push(Tensor::from_i64(&[t, n], ids).unwrap())
        }
    }
    let lab_dims = if per_step { vec![t, n] } else { vec![n] };
    let count = lab_dims.iter().product();
    let labels = (0..count).map(|_| rng.below(classes) as i64).collect();
    inputs.push(Tensor::from_i64(&lab_dims, labels).unwrap());
    for (_, d) in &model.states {
        let d: Vec<usize> = d.iter().map(|d| d.known().unwrap()).collect();
        inputs.push(Tensor::zeros(DType::F32, &d));
    }
    for (_, d) in &model.masks {
        let d: Vec<usize> = d.iter().map(|d| d.known().unwrap()).collect();
        inputs.push(models::dropout_mask(&mut rng, &d, 0.3));
    }
    inputs.extend(model.init_params(seed + 1));
    inputs
}

fn gradcheck_model(cfg: &ModelConfig, t: usize, n: usize, seed: u64, save: SaveMode) {
    let model = models::build(cfg, &Dims::known(t, n), true).unwrap();
    let inputs = feed(&model, cfg, t, n, seed);
    let params = model.param_names();
    common::gradcheck(&model.graph, "loss", &params, &inputs, Options { save });
}

#[test]
fn hlstm_classifier_gradients() {
    let cfg = classifier(hlstm(1, 4), 1, true);
    gradcheck_model(&cfg, 3, 2, 1, SaveMode::Intermediates);
    gradcheck_model(&cfg, 3, 2, 2, SaveMode::Recompute);
}

#[test]
fn two_hidden_layer_hlstm_and_stacked_lstm_gradients() {
    gradcheck_model(
        &classifier(hlstm(2, 3), 1, false),
        3,
        2,
        3,
        SaveMode::Intermediates,
    );
    gradcheck_model(
        &classifier(CellKind::Lstm, 2, false),
        4,
        2,
        4,
        SaveMode::Intermediates,
    );
}

/// Dropout between stacked LSTM layers: one mask per boundary, gradients through it, ones
/// reproduce the model without dropout, and a zero mask cuts the lower layer off.
#[test]
fn stacked_lstm_dropout_between_layers() {
    let (t, n) = (4, 2);
    let cfg = classifier(CellKind::Lstm, 3, true);
    let model = models::build(&cfg, &Dims::known(t, n), true).unwrap();
    let names: Vec<&str> = model.masks.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["drop.l1.in", "drop.l2.in"]);
    let d: Vec<usize> = model.masks[0]
        .1
        .iter()
        .map(|d| d.known().unwrap())
        .collect();
    assert_eq!(d, [t, n, 3]);
    gradcheck_model(&cfg, t, n, 21, SaveMode::Intermediates);
    gradcheck_model(&cfg, t, n, 22, SaveMode::Recompute);
    let plain = models::build(
        &ModelConfig {
            dropout: false,
            ..cfg.clone()
        },
        &Dims::known(t, n),
        true,
    )
    .unwrap();
    let inputs = feed(&model, &cfg, t, n, 23);
    let (nmask, at) = (model.masks.len(), 2 + model.states.len());
    let with_masks = |value: f32, x: Option<Tensor>| {
        let mut v = inputs.clone();
        for m in &mut v[at..at + nmask] {
            *m = Tensor::from_f32(&[t, n, 3], vec![value; t * n * 3]).unwrap();
        }
        if let Some(x) = x {
            v[0] = x;
        }
        interp::run(&model.graph, &v).unwrap()
    };
    let mut no_masks = inputs.clone();
    no_masks.drain(at..at + nmask);
    let want = interp::run(&plain.graph, &no_masks).unwrap();
    assert_eq!(f64s(&with_masks(1.0, None)[0]), f64s(&want[0]));
    // All-zero masks: the top layer sees zeros, so the logits do not depend on X.
    let other = Tensor::from_f32(&[t, n, 3], vec![0.7; t * n * 3]).unwrap();
    assert_eq!(
        f64s(&with_masks(0.0, None)[0]),
        f64s(&with_masks(0.0, Some(other))[0])
    );
}

#[test]
fn next_token_models_with_embedding() {
    for (i, cell) in [CellKind::Lstm, hlstm(1, 3)].into_iter().enumerate() {
        let cfg = ModelConfig {
            cell,
            input: InputKind::Tokens { vocab: 5, embed: 3 },
            head: Head::NextToken { vocab: 5 },
            layers: 1,
            hidden: 3,
            dropout: true,
        };
        gradcheck_model(&cfg, 3, 2, 10 + i as u64, SaveMode::Intermediates);
    }
}

/// Row-major matrix product in f64: a [m, k] times b [k, n].
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.as_f32().unwrap().iter().map(|&v| v as f64).collect()
}

/// An independent H-LSTM classifier (one layer, f64), following the paper's equations: each
/// gate is relu layers (times their dropout masks) then a linear layer and its activation.
fn reference_hlstm(
    t: usize,
    n: usize,
    x: usize,
    h: usize,
    layers: usize,
    width: usize,
    inputs: &[Tensor],
) -> (Vec<f64>, f64) {
    let xs = f64s(&inputs[0]);
    let labels = inputs[1].to_i64_vec().unwrap();
    let masks: Vec<Vec<f64>> = inputs[4..4 + 4 * layers].iter().map(f64s).collect();
    let params: Vec<Vec<f64>> = inputs[4 + 4 * layers..].iter().map(f64s).collect();
    let (mut hs, mut cs) = (vec![0.0; n * h], vec![0.0; n * h]);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    for step in 0..t {
        let mut z = Vec::new();
        for r in 0..n {
            z.extend_from_slice(&xs[(step * n + r) * x..(step * n + r + 1) * x]);
            z.extend_from_slice(&hs[r * h..(r + 1) * h]);
        }
        let mut gates = Vec::new();
        for gi in 0..4 {
            let p = &params[gi * (2 * layers + 2)..(gi + 1) * (2 * layers + 2)];
            let (mut a, mut fan) = (z.clone(), x + h);
            for k in 0..layers {
                let mut s = mm(&a, &p[2 * k], n, fan, width);
                let mask = &masks[gi * layers + k][step * n * width..(step + 1) * n * width];
                for (e, v) in s.iter_mut().enumerate() {
                    *v = (*v + p[2 * k + 1][e % width]).max(0.0) * mask[e];
                }
                (a, fan) = (s, width);
            }
            let mut o = mm(&a, &p[2 * layers], n, fan, h);
            for (e, v) in o.iter_mut().enumerate() {
                let pre = *v + p[2 * layers + 1][e % h];
                *v = if gi == 2 { pre.tanh() } else { sig(pre) };
            }
            gates.push(o);
        }
        for e in 0..n * h {
            cs[e] = gates[1][e] * cs[e] + gates[0][e] * gates[2][e];
            hs[e] = gates[3][e] * cs[e].tanh();
        }
    }
    let classes = params[params.len() - 1].len();
    let mut logits = mm(&hs, &params[params.len() - 2], n, h, classes);
    let mut loss = 0.0;
    for r in 0..n {
        let row = &mut logits[r * classes..(r + 1) * classes];
        for (j, v) in row.iter_mut().enumerate() {
            *v += params[params.len() - 1][j];
        }
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
    }
    (logits, loss / n as f64)
}

#[test]
fn hlstm_forward_matches_an_independent_implementation() {
    let (t, n, layers, width) = (4, 3, 2, 5);
    let cfg = ModelConfig {
        hidden: 4,
        ..classifier(hlstm(layers, width), 1, true)
    };
    let model = models::build(&cfg, &Dims::known(t, n), true).unwrap();
    let inputs = feed(&model, &cfg, t, n, 77);
    let out = interp::run(&model.graph, &inputs).unwrap();
    let (logits, loss) = reference_hlstm(t, n, 3, 4, layers, width, &inputs);
    let got = f64s(&out[0]);
    assert_eq!(got.len(), logits.len());
    for (a, b) in got.iter().zip(&logits) {
        assert!((a - b).abs() < 1e-5, "logits {got:?} vs {logits:?}");
    }
    let got_loss = f64s(&out[1])[0];
    assert!((got_loss - loss).abs() < 1e-5, "loss {got_loss} vs {loss}");
}

#[test]
fn symbolic_dims_build_for_export_but_not_for_training() {
    let cfg = classifier(hlstm(1, 4), 2, true);
    let dims = Dims {
        steps: Dim::Sym("T".into()),
        batch: Dim::Sym("N".into()),
    };
    let model = models::build(&cfg, &dims, false).unwrap();
    hlstm_ir::verify::verify(&model.graph).unwrap();
    let names: Vec<&str> = model
        .graph
        .outputs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["logits", "hT.l0", "cT.l0", "hT.l1", "cT.l1"]);
    let text = hlstm_ir::text::print(&model.graph);
    assert!(text.contains("%X: f32[T,N,3]"), "{text}");
    // With a loss the static shapes are required, and the error says so.
    let err = models::build(&cfg, &dims, true).unwrap_err().to_string();
    assert!(err.contains("static shapes"), "{err}");
}

#[test]
fn bad_configs_are_errors() {
    let mut cfg = classifier(hlstm(0, 4), 1, false);
    assert!(models::build(&cfg, &Dims::known(2, 2), true).is_err());
    cfg.cell = CellKind::Lstm;
    cfg.layers = 0;
    let err = models::build(&cfg, &Dims::known(2, 2), true).unwrap_err();
    assert!(err.to_string().contains("layers"), "{err}");
}
