//! The fast engine against the reference interpreter: the same outputs and gradients up to f32
//! rounding on a training graph with recurrences (both directions: the forward layer and BPTT),
//! and reproducible training runs.

use hlstm_ir::{DType, Tensor};
use hlstm_trainer::exec::{Engine, Fast, Interp};
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, ModelConfig};
use hlstm_trainer::rng::Rng;
use hlstm_trainer::{Options, SaveMode};

fn check(cell: CellKind, head: Head, input: InputKind, save: SaveMode) {
    let cfg = ModelConfig {
        cell,
        input: input.clone(),
        head: head.clone(),
        layers: 2,
        hidden: 7,
        dropout: true,
    };
    let (t, n) = (5, 3);
    let m = models::build(&cfg, &Dims::known(t, n), true).unwrap();
    let tg = m.training_graph(&Options { save }).unwrap();
    let mut rng = Rng::new(11);
    let mut inputs = match input {
        InputKind::Features { size } => {
            vec![Tensor::from_f32(&[t, n, size], rng.vec(t * n * size, -1.0, 1.0)).unwrap()]
        }
        InputKind::Tokens { vocab, .. } => vec![
            Tensor::from_i64(
                &[t, n],
                (0..t * n).map(|_| rng.below(vocab) as i64).collect(),
            )
            .unwrap(),
        ],
    };
    inputs.push(match head {
        Head::Classifier { classes } => {
            Tensor::from_i64(&[n], (0..n).map(|_| rng.below(classes) as i64).collect()).unwrap()
        }
        Head::NextToken { vocab } => Tensor::from_i64(
            &[t, n],
            (0..t * n).map(|_| rng.below(vocab) as i64).collect(),
        )
        .unwrap(),
    });
    for (_, d) in &m.states {
        let dims: Vec<usize> = d.iter().map(|d| d.known().unwrap()).collect();
        inputs.push(Tensor::from_f32(&dims, rng.vec(dims.iter().product(), -0.5, 0.5)).unwrap());
    }
    for (_, d) in &m.masks {
        let dims: Vec<usize> = d.iter().map(|d| d.known().unwrap()).collect();
        inputs.push(models::dropout_mask(&mut rng, &dims, 0.2));
    }
    inputs.extend(m.init_params(5));
    let want = Interp.load(&tg).unwrap().run(&inputs).unwrap();
    let got = Fast.load(&tg).unwrap().run(&inputs).unwrap();
    assert_eq!(want.len(), got.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape());
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
        let err = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "output {} ({}): error {err}, scale {scale}",
            k,
            tg.outputs[k].0
        );
    }
}

#[test]
fn fast_engine_agrees_with_the_interpreter() {
    let feats = InputKind::Features { size: 4 };
    let hl = CellKind::Hlstm {
        hidden_layers: 1,
        hidden_width: 6,
    };
    check(
        hl.clone(),
        Head::Classifier { classes: 5 },
        feats.clone(),
        SaveMode::Intermediates,
    );
    check(
        hl,
        Head::Classifier { classes: 5 },
        feats,
        SaveMode::Recompute,
    );
    let toks = InputKind::Tokens { vocab: 9, embed: 4 };
    check(
        CellKind::Lstm,
        Head::NextToken { vocab: 9 },
        toks,
        SaveMode::Intermediates,
    );
}

#[test]
fn fast_engine_rejects_bad_inputs_like_the_interpreter() {
    let cfg = ModelConfig {
        cell: CellKind::Lstm,
        input: InputKind::Features { size: 2 },
        head: Head::Classifier { classes: 2 },
        layers: 1,
        hidden: 3,
        dropout: false,
    };
    let m = models::build(&cfg, &Dims::known(2, 1), false).unwrap();
    let err = Fast
        .load(&m.graph)
        .unwrap()
        .run(&[Tensor::zeros(DType::F32, &[2, 1, 5])])
        .unwrap_err();
    assert!(
        err.to_string().contains("expected") || err.to_string().contains("input"),
        "{err}"
    );
}
