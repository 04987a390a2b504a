//! The fast and JIT engines against the reference interpreter: the same outputs and gradients
//! up to f32 rounding on a training graph with recurrences (both directions: the forward layer
//! and BPTT), and reproducible training runs.

use hlstm_ir::{DType, Tensor};
use hlstm_trainer::exec::{Engine, Fast, Interp, Jit, kernel_program};
use hlstm_trainer::gp::Masks;
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, ModelConfig};
use hlstm_trainer::rng::Rng;
use hlstm_trainer::{Options, SaveMode};

/// With `density`, every weight matrix is masked at it (its weights zero outside) and the
/// engine told so (`Executable::set_masks`): the JIT multiplies the sparse ones by compressed
/// kernels over their masks.
/// A model's size and the engine's threads.
#[derive(Clone, Copy)]
struct Size {
    hidden: usize,
    steps: usize,
    batch: usize,
    threads: usize,
}

/// The size most checks use: small enough for the interpreter.
const SMALL: Size = Size {
    hidden: 7,
    steps: 5,
    batch: 3,
    threads: 1,
};

fn check(
    engine: &dyn Engine,
    cell: CellKind,
    head: Head,
    input: InputKind,
    save: SaveMode,
    density: Option<f64>,
    size: Size,
) {
    let cfg = ModelConfig {
        cell,
        input: input.clone(),
        head: head.clone(),
        layers: 2,
        hidden: size.hidden,
        dropout: true,
    };
    let (t, n) = (size.steps, size.batch);
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
    let mut params = m.init_params(5);
    let mut masks: Masks = Vec::new();
    if let Some(d) = density {
        for p in params.iter_mut() {
            let shape = p.shape().to_vec();
            let mut w: Vec<f32> = p.as_f32().unwrap().iter().copied().collect();
            let mask = (shape.len() == 2).then(|| {
                (0..w.len())
                    .map(|_| rng.vec(1, 0.0, 1.0)[0] < d as f32)
                    .collect::<Vec<bool>>()
            });
            if let Some(mask) = &mask {
                w.iter_mut()
                    .zip(mask)
                    .for_each(|(x, on)| *x *= f32::from(*on));
            }
            *p = Tensor::from_f32(&shape, w).unwrap();
            masks.push(mask);
        }
        if engine.name() == "jit" {
            let printed = hlstm_ir::kernel::print(&kernel_program(&tg, &masks).unwrap());
            assert!(printed.contains("masked by"), "{printed}");
        }
    }
    inputs.extend(params);
    let want = Interp.load(&tg).unwrap().run(&inputs).unwrap();
    let mut exe = engine.load_threads(&tg, size.threads).unwrap();
    exe.set_masks(&masks);
    let got = exe.run(&inputs).unwrap();
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
            "{}: output {} ({}): error {err}, scale {scale}",
            engine.name(),
            k,
            tg.outputs[k].0
        );
    }
}

fn agrees_with_the_interpreter(engine: &dyn Engine) {
    let feats = InputKind::Features { size: 4 };
    let hl = CellKind::Hlstm {
        hidden_layers: 1,
        hidden_width: 6,
    };
    for save in [SaveMode::Intermediates, SaveMode::Recompute] {
        let classifier = Head::Classifier { classes: 5 };
        check(
            engine,
            hl.clone(),
            classifier,
            feats.clone(),
            save,
            None,
            SMALL,
        );
    }
    let two_hidden = CellKind::Hlstm {
        hidden_layers: 2,
        hidden_width: 5,
    };
    let toks = InputKind::Tokens { vocab: 9, embed: 4 };
    let next = Head::NextToken { vocab: 9 };
    check(
        engine,
        two_hidden,
        next.clone(),
        toks.clone(),
        SaveMode::Intermediates,
        None,
        SMALL,
    );
    check(
        engine,
        CellKind::Lstm,
        next.clone(),
        toks.clone(),
        SaveMode::Intermediates,
        None,
        SMALL,
    );
    let classifier = Head::Classifier { classes: 3 };
    check(
        engine,
        CellKind::Lstm,
        classifier,
        feats.clone(),
        SaveMode::Recompute,
        None,
        SMALL,
    );
    // Masked weights, sparse enough for the JIT's compressed kernels: forward products and
    // the input gradients' (transposed) products, in the loops and out of them.
    for (density, save) in [(0.25, SaveMode::Intermediates), (0.1, SaveMode::Recompute)] {
        let classifier = Head::Classifier { classes: 5 };
        check(
            engine,
            hl.clone(),
            classifier,
            feats.clone(),
            save,
            Some(density),
            SMALL,
        );
        let lm = (toks.clone(), next.clone());
        check(
            engine,
            CellKind::Lstm,
            lm.1,
            lm.0,
            save,
            Some(density),
            SMALL,
        );
    }
}

#[test]
fn fast_engine_agrees_with_the_interpreter() {
    agrees_with_the_interpreter(&Fast);
}

#[test]
fn jit_engine_agrees_with_the_interpreter() {
    agrees_with_the_interpreter(&Jit);
}

/// Weights large enough for the wide kernels and batches of four rows or more: the JIT packs
/// the dense run-time weights its time loops multiply by once before each loop (backends'
/// `Layout::pack_before`), and from eight rows multiplies masked ones by the wide sparse
/// kernel, on one thread and split across two and three.
#[test]
fn jit_engine_on_batched_weights_and_threads() {
    let toks = InputKind::Tokens {
        vocab: 11,
        embed: 6,
    };
    for threads in [1, 2, 3] {
        for (hidden, batch) in [(24, 4), (20, 9)] {
            let size = Size {
                hidden,
                steps: 4,
                batch,
                threads,
            };
            for density in [None, Some(0.2)] {
                let next = Head::NextToken { vocab: 11 };
                let lm = (toks.clone(), SaveMode::Intermediates);
                check(&Jit, CellKind::Lstm, next, lm.0, lm.1, density, size);
            }
        }
    }
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

/// A graph with an open batch and sequence length (the trainer's evaluation graph) is
/// specialized to each call's shapes; inputs that contradict the graph or each other, and
/// class indices out of range, are errors naming the input.
#[test]
fn jit_engine_specializes_open_shapes_and_checks_inputs() {
    let cfg = ModelConfig {
        cell: CellKind::Lstm,
        input: InputKind::Tokens { vocab: 6, embed: 3 },
        head: Head::NextToken { vocab: 6 },
        layers: 1,
        hidden: 4,
        dropout: false,
    };
    let dims = Dims {
        steps: hlstm_ir::Dim::Sym("T".into()),
        batch: hlstm_ir::Dim::Sym("N".into()),
    };
    let m = models::build(&cfg, &dims, false).unwrap();
    let params = m.init_params(3);
    let inputs = |t: usize, n: usize, token: i64| {
        let mut v = vec![
            Tensor::from_i64(
                &[t, n],
                (0..(t * n) as i64).map(|i| (i + token) % 6).collect(),
            )
            .unwrap(),
        ];
        v.extend((0..2).map(|_| Tensor::zeros(DType::F32, &[n, 4])));
        v.extend(params.iter().cloned());
        v
    };
    let mut jit = Jit.load(&m.graph).unwrap();
    let mut interp = Interp.load(&m.graph).unwrap();
    for (t, n) in [(5, 2), (3, 1), (5, 2)] {
        let x = inputs(t, n, 1);
        let (a, b) = (jit.run(&x).unwrap(), interp.run(&x).unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.shape(), q.shape());
            let (p, q) = (p.as_f32().unwrap(), q.as_f32().unwrap());
            assert!(p.iter().zip(q).all(|(x, y)| (x - y).abs() <= 1e-5));
        }
    }
    // A batch of 2 in the tokens but 3 in the states.
    let mut bad = inputs(5, 2, 0);
    bad[1] = Tensor::zeros(DType::F32, &[3, 4]);
    let e = jit.run(&bad).unwrap_err().to_string();
    assert!(e.contains("'h0.l0'") && e.contains("[3,4]"), "{e}");
    // A token past the vocabulary.
    let mut bad = inputs(5, 2, 0);
    bad[0] = Tensor::from_i64(&[5, 2], vec![6; 10]).unwrap();
    let e = jit.run(&bad).unwrap_err().to_string();
    assert!(e.contains("'tokens'") && e.contains("out of range"), "{e}");
    // f32 where tokens are expected.
    let mut bad = inputs(5, 2, 0);
    bad[0] = Tensor::zeros(DType::F32, &[5, 2]);
    let e = jit.run(&bad).unwrap_err().to_string();
    assert!(e.contains("'tokens'"), "{e}");
}
