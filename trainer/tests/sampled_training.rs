//! `train.sampled_gradients` and `train.threads` in training: the training graph without its
//! weight-gradient products (`exec::factored`) gives the whole graph's outputs, a grow-and-prune
//! schedule ends with the same masks and nearly the same weights with and without sampled
//! products, and the thread count changes no bit of a run.

use hlstm_ir::Tensor;
use hlstm_trainer::config::Config;
use hlstm_trainer::exec::factored::{self, Plan, Source};
use hlstm_trainer::exec::{Engine, Interp, Jit};
use hlstm_trainer::gp::Masks;
use hlstm_trainer::models::{self, CellKind, Dims, Head, InputKind, ModelConfig};
use hlstm_trainer::rng::Rng;
use hlstm_trainer::train::{self, Record, Session};
use hlstm_trainer::{Options, SaveMode};
use std::path::Path;

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().unwrap().iter().copied().collect()
}

/// One training step of `cfg`'s model (T = 5, batch 3) with its weight matrices masked at about
/// 15% or 50% (under `SAMPLED_MAX_DENSITY` and over): the factored graph's outputs against the
/// whole graph's, with sampled products where the mask allows and dense ones.
fn factored_matches(cfg: ModelConfig, save: SaveMode) {
    let (t, n) = (5, 3);
    let m = models::build(&cfg, &Dims::known(t, n), true).unwrap();
    let tg = m.training_graph(&Options { save }).unwrap();
    let mut rng = Rng::new(3);
    let mut inputs = match cfg.input {
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
    inputs.push(match cfg.head {
        Head::Classifier { classes } => {
            Tensor::from_i64(&[n], (0..n).map(|_| rng.below(classes) as i64).collect()).unwrap()
        }
        Head::NextToken { vocab } => Tensor::from_i64(
            &[t, n],
            (0..t * n).map(|_| rng.below(vocab) as i64).collect(),
        )
        .unwrap(),
    });
    for (_, d) in m.states.iter().chain(&m.masks) {
        let dims: Vec<usize> = d.iter().map(|d| d.known().unwrap()).collect();
        inputs.push(Tensor::from_f32(&dims, rng.vec(dims.iter().product(), 0.0, 1.0)).unwrap());
    }
    let mut masks: Masks = Vec::new();
    for (i, p) in m.init_params(5).iter().enumerate() {
        let dims = p.shape().to_vec();
        let mut w = f32s(p);
        let density = [0.15, 0.5][i % 2];
        let mask = (dims.len() == 2).then(|| {
            (0..w.len())
                .map(|_| rng.vec(1, 0.0, 1.0)[0] < density)
                .collect::<Vec<bool>>()
        });
        if let Some(mask) = &mask {
            w.iter_mut()
                .zip(mask)
                .for_each(|(x, on)| *x *= f32::from(*on));
        }
        masks.push(mask);
        inputs.push(Tensor::from_f32(&dims, w).unwrap());
    }
    let first = tg.outputs.len() - masks.len();
    let which: Vec<(usize, usize)> = (0..masks.len())
        .filter(|&i| masks[i].is_some())
        .map(|i| (first + i, i))
        .collect();
    let f = factored::factor(&tg, &which);
    let products = f
        .sources
        .iter()
        .filter(|s| matches!(s, Source::Product { .. }))
        .count();
    assert_eq!(
        products,
        which.len(),
        "every weight matrix's gradient is a product"
    );
    assert!(
        f.graph
            .outputs
            .iter()
            .all(|(name, _)| { !which.iter().any(|&(o, _)| *name == tg.outputs[o].0) })
    );
    let want = Interp.load(&tg).unwrap().run(&inputs).unwrap();
    let mut exec = Interp.load(&f.graph).unwrap();
    let mut sampled_some = false;
    for dense in [false, true] {
        let mut plan = Plan::new(&f, 2);
        plan.set_masks(&masks, dense);
        let mut raw = exec.run(&inputs).unwrap();
        let mut got = Vec::new();
        plan.finish(&mut raw, &mut got).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape(), w.shape(), "output {i}");
            let (g, w) = (f32s(g), f32s(w));
            let Some(&(_, param)) = which.iter().find(|(o, _)| *o == i) else {
                // Not a product: the same nodes computed the same way.
                assert_eq!(g, w, "output {} ({})", i, tg.outputs[i].0);
                continue;
            };
            let mask = masks[param].as_ref().unwrap();
            let kept = mask.iter().filter(|&&on| on).count() as f64;
            let sampled = !dense && kept <= factored::SAMPLED_MAX_DENSITY * mask.len() as f64;
            sampled_some |= sampled;
            let scale = w.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-3);
            for (j, ((g, w), on)) in g.iter().zip(&w).zip(mask).enumerate() {
                if *on || !sampled {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "{} [{j}]: {g} vs {w}",
                        tg.outputs[i].0
                    );
                } else {
                    assert_eq!(*g, 0.0, "{} [{j}] is outside the mask", tg.outputs[i].0);
                }
            }
        }
    }
    assert!(sampled_some, "a mask sparse enough for the sampled product");
}

#[test]
fn factored_graph_gives_the_whole_graphs_outputs() {
    let hlstm = ModelConfig {
        cell: CellKind::Hlstm {
            hidden_layers: 2,
            hidden_width: 6,
        },
        input: InputKind::Features { size: 4 },
        head: Head::Classifier { classes: 3 },
        layers: 1,
        hidden: 5,
        dropout: true,
    };
    factored_matches(hlstm.clone(), SaveMode::Intermediates);
    factored_matches(hlstm, SaveMode::Recompute);
    let lm = ModelConfig {
        cell: CellKind::Lstm,
        input: InputKind::Tokens { vocab: 7, embed: 3 },
        head: Head::NextToken { vocab: 7 },
        layers: 2,
        hidden: 6,
        dropout: true,
    };
    factored_matches(lm.clone(), SaveMode::Intermediates);
    factored_matches(lm, SaveMode::Recompute);
}

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

/// A tiny digits H-LSTM through a whole grow-and-prune schedule: seeded at 25% (sampled
/// products from the first epoch), one growth round (dense products), pruning to 10%.
fn digits(extra: &str) -> Config {
    let text = format!(
        r#"
seed = 7
[data]
format = "csv"
path = "digits/digits.csv.gz"
steps = 8
features = 8
scale = 0.0625
split = {{ modulus = 5, test = [4], validation = [3] }}
[model]
cell = "hlstm"
hidden = 6
hidden_width = 5
dropout = 0.1
[train]
engine = "jit"
epochs = 2
batch = 128
lr = 0.02
{extra}
[gp]
seed_density = 0.25
grow_rounds = 1
grow_epochs = 1
growth_ratio = 0.3
prune_ratio = 0.5
target_density = 0.1
retrain_epochs = 1
tolerance = 1.0
final_epochs = 1
"#
    );
    Config::parse(&text, data_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn run(cfg: &Config) -> (train::Summary, Session) {
    let mut s = Session::new(cfg, &Jit).unwrap();
    let sum = train::run(&mut s, &mut ()).unwrap();
    (sum, s)
}

fn log_text(log: &[Record]) -> String {
    log.iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

/// The same schedule with and without sampled products: the same records and masks, and
/// weights that differ by the rounding of the reordered sums, carried through the run (Adam
/// normalizes each step, so a difference of a few ulps in a gradient moves a weight by a few
/// ulps of its step; measured here: 3.6e-7 of the largest weight, the bound is 1e-5).
#[test]
fn gp_schedule_same_with_and_without_sampled_products() {
    let (want, a) = run(&digits("sampled_gradients = false"));
    let (got, b) = run(&digits("sampled_gradients = true"));
    let kinds = |log: &[Record]| -> Vec<String> {
        log.iter()
            .map(|r| serde_json::to_value(r).unwrap()["kind"].to_string())
            .collect()
    };
    assert_eq!(kinds(&want.log), kinds(&got.log));
    assert!(kinds(&got.log).contains(&"\"grow\"".into()));
    assert_eq!(a.masks, b.masks, "the same connections grown and pruned");
    let mut worst = 0f32;
    for (wa, wb) in a.params.iter().zip(&b.params) {
        let scale = wa.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in wa.iter().zip(wb) {
            worst = worst.max((x - y).abs() / scale.max(1e-6));
        }
    }
    assert!(worst <= 1e-5, "weights differ by {worst} of the largest");
    assert!(
        worst > 0.0,
        "the sampled products were used (their rounding differs)"
    );
    assert!((want.test.loss - got.test.loss).abs() <= 1e-4 * want.test.loss.abs());
}

/// Threads split the JIT's statements and the products by whole units of work, the same
/// arithmetic per element: the log and the weights are the same bits on 1, 2 and 3 threads,
/// with sparse kernels and sampled products and without.
#[test]
fn thread_count_changes_no_bit() {
    for extra in ["sparse_kernels = true", "sampled_gradients = false"] {
        let runs: Vec<(train::Summary, Session)> = [1, 2, 3]
            .iter()
            .map(|t| run(&digits(&format!("{extra}\nthreads = {t}"))))
            .collect();
        for (sum, s) in &runs[1..] {
            assert_eq!(log_text(&runs[0].0.log), log_text(&sum.log), "{extra}");
            assert_eq!(runs[0].1.params, s.params, "{extra}");
        }
    }
}
