//! The training loop end to end on tiny configurations: reproducibility, grow and prune,
//! export and re-import, language-model evaluation, config errors, the JIT engine.

use hlstm_ir::{Tensor, interp};
use hlstm_trainer::config::Config;
use hlstm_trainer::exec::{Engine, Interp, Jit};
use hlstm_trainer::gp;
use hlstm_trainer::train::{self, Record, Session, Split};
use std::path::Path;

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

/// A tiny digits H-LSTM; `extra` is appended (more sections or keys).
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
epochs = 1
batch = 128
lr = 0.02
{extra}
"#
    );
    Config::parse(&text, data_dir()).unwrap_or_else(|e| panic!("{e}"))
}

const GP: &str = r#"
[gp]
seed_density = 0.5
grow_rounds = 1
grow_epochs = 1
growth_ratio = 0.25
prune_ratio = 0.5
target_density = 0.3
retrain_epochs = 1
tolerance = 1.0
final_epochs = 1
"#;

fn log_text(log: &[Record]) -> String {
    log.iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

#[test]
fn same_seed_same_log_and_grow_prune_reach_the_target() {
    let cfg = digits(GP);
    let run = || {
        let mut s = Session::new(&cfg, &Interp).unwrap();
        let sum = train::run(&mut s, &mut ()).unwrap();
        (s, sum)
    };
    let (s, a) = run();
    let (_, b) = run();
    assert_eq!(log_text(&a.log), log_text(&b.log), "same seed, same log");
    let mut other = cfg.clone();
    other.seed = 8;
    let mut s2 = Session::new(&other, &Interp).unwrap();
    assert_ne!(
        log_text(&train::run(&mut s2, &mut ()).unwrap().log),
        log_text(&a.log)
    );

    // The seed architecture is at half density; growth adds connections; pruning stops at
    // the target, never below it, in every matrix.
    let grown = a.log.iter().find_map(|r| match r {
        Record::Grow { grown, .. } => Some(*grown),
        _ => None,
    });
    assert!(grown.unwrap() > 0);
    let prunes = a
        .log
        .iter()
        .filter(|r| matches!(r, Record::Prune { .. }))
        .count();
    assert!(prunes >= 2, "{prunes} pruning rounds");
    for m in s.masks.iter().flatten() {
        let on = m.iter().filter(|&&b| b).count();
        assert_eq!(
            on,
            (0.3 * m.len() as f64).ceil() as usize,
            "a matrix of {}",
            m.len()
        );
    }
    for r in &a.log {
        if let Record::Epoch { density, .. } | Record::Prune { density, .. } = r {
            assert!(*density >= 0.3 - 1e-9, "{r:?}");
        }
    }
    // Weights outside the masks are zero; the reported count is what the weights hold.
    for (w, m) in s.params.iter().zip(&s.masks) {
        if let Some(m) = m {
            assert!(w.iter().zip(m).all(|(w, on)| *on || *w == 0.0));
        }
    }
    assert_eq!(a.nonzero_weights, s.nonzeros().0);
    assert!(a.test.accuracy > 0.0 && a.test.loss.is_finite());
}

/// The JIT engine runs the same schedule: its log is reproducible, and the first epoch's
/// losses and accuracies equal the interpreter's up to f32 rounding (later epochs drift apart
/// as rounding differences move the weights, and a tie in growth or pruning may break the
/// other way). Evaluation graphs with an open batch and sequence length are specialized per
/// call: a language model's bits per character agree with the interpreter's.
#[test]
fn the_jit_engine_trains_like_the_interpreter() {
    let cfg = digits(GP);
    let run = |e: &dyn Engine| {
        let mut s = Session::new(&cfg, e).unwrap();
        train::run(&mut s, &mut ()).unwrap()
    };
    let (want, got, again) = (run(&Interp), run(&Jit), run(&Jit));
    assert_eq!(log_text(&got.log), log_text(&again.log), "reproducible");
    let first = |log: &[Record]| {
        log.iter()
            .find_map(|r| match r {
                Record::Epoch {
                    loss,
                    accuracy,
                    val_loss,
                    val_accuracy,
                    ..
                } => Some([*loss, *accuracy, *val_loss, *val_accuracy]),
                _ => None,
            })
            .unwrap()
    };
    let (w, g) = (first(&want.log), first(&got.log));
    for (a, b) in w.iter().zip(&g) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{w:?} vs {g:?}");
    }
    assert!(got.test.loss.is_finite() && got.test.accuracy > 0.0);

    let mut lm = Session::new(&text(10, ""), &Interp).unwrap();
    train::run(&mut lm, &mut ()).unwrap();
    let mut lm_jit = Session::new(&text(10, ""), &Jit).unwrap();
    lm_jit.params = lm.params.clone();
    let (a, b) = (
        lm.evaluate(Split::Test).unwrap().bpc.unwrap(),
        lm_jit.evaluate(Split::Test).unwrap().bpc.unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
}

/// `train.sparse_kernels`: the JIT engine compiles masked weights at most 30% dense into
/// compressed kernels, and again whenever the masks change (here: a 25% seed, a growth round,
/// pruning rounds to 10%). The run is reproducible, its first epoch (every matrix masked)
/// equals the dense kernels' up to f32 rounding, its schedule takes the same steps, and the
/// weights stay zero outside their masks.
#[test]
fn sparse_kernels_train_like_dense_ones() {
    let gp = GP
        .replace("seed_density = 0.5", "seed_density = 0.25")
        .replace("growth_ratio = 0.25", "growth_ratio = 0.3")
        .replace("target_density = 0.3", "target_density = 0.1");
    let dense = digits(&format!("sparse_kernels = false\n{gp}"));
    let sparse = digits(&format!("sparse_kernels = true\n{gp}"));
    assert!(sparse.train.sparse_kernels && !dense.train.sparse_kernels);
    let run = |cfg: &Config| {
        let mut s = Session::new(cfg, &Jit).unwrap();
        let sum = train::run(&mut s, &mut ()).unwrap();
        (sum, s)
    };
    let ((want, _), (got, s), (again, _)) = (run(&dense), run(&sparse), run(&sparse));
    assert_eq!(log_text(&got.log), log_text(&again.log), "reproducible");
    let kinds = |log: &[Record]| -> Vec<String> {
        log.iter()
            .map(|r| serde_json::to_value(r).unwrap()["kind"].to_string())
            .collect()
    };
    assert_eq!(kinds(&want.log), kinds(&got.log));
    let epochs = |log: &[Record]| -> Vec<[f64; 3]> {
        log.iter()
            .filter_map(|r| match r {
                Record::Epoch {
                    loss,
                    val_loss,
                    density,
                    ..
                } => Some([*loss, *val_loss, *density]),
                _ => None,
            })
            .collect()
    };
    let (w, g) = (epochs(&want.log), epochs(&got.log));
    assert!(
        g[0][2] <= 0.3 && g.last().unwrap()[2] <= 0.1 + 1e-9,
        "{g:?}"
    );
    let k = kinds(&got.log);
    assert!(
        k.contains(&"\"grow\"".into()) && k.contains(&"\"prune\"".into()),
        "{k:?}"
    );
    for (a, b) in w[0].iter().zip(&g[0]) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{w:?} vs {g:?}");
    }
    for (w, m) in s.params.iter().zip(&s.masks) {
        if let Some(m) = m {
            assert!(w.iter().zip(m).all(|(w, on)| *on || *w == 0.0));
        }
    }
    assert!(got.test.loss.is_finite() && got.test.accuracy > 0.0);
}

#[test]
fn pruning_undoes_a_round_that_hurts_validation() {
    // A zero tolerance and a huge pruning ratio: the first round that lowers validation
    // accuracy is undone and pruning stops above the target.
    let gp = GP
        .replace("tolerance = 1.0", "tolerance = 0.0")
        .replace("prune_ratio = 0.5", "prune_ratio = 0.95");
    let cfg = digits(&gp.replace("target_density = 0.3", "target_density = 0.01"));
    let mut s = Session::new(&cfg, &Interp).unwrap();
    let sum = train::run(&mut s, &mut ()).unwrap();
    let log = log_text(&sum.log);
    let Some(Record::Revert {
        density,
        val_score,
        floor,
        ..
    }) = sum.log.iter().find(|r| matches!(r, Record::Revert { .. }))
    else {
        panic!("no revert: {log}");
    };
    assert!(val_score < floor);
    // The weights and masks are those before the undone round, which had pruned further.
    let Some(Record::Prune {
        density: pruned_to, ..
    }) = sum
        .log
        .iter()
        .rev()
        .find(|r| matches!(r, Record::Prune { .. }))
    else {
        panic!("no prune: {log}");
    };
    assert!(pruned_to < density && *density == sum.density, "{log}");
    assert!(sum.density > 0.01);
}

#[test]
fn exported_model_matches_the_trainer() {
    let mut s = Session::new(&digits(""), &Interp).unwrap();
    train::run(&mut s, &mut ()).unwrap();
    let bytes = hlstm_trainer::export::onnx_bytes(&s).unwrap();
    let g = hlstm_frontends::onnx::import_bytes(&bytes, None).unwrap();
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.outputs[0].0, "logits");
    // Five validation-like samples through the imported model and through the trainer's own
    // forward graph (zero states, weights as inputs).
    let x = Tensor::from_f32(
        &[8, 5, 8],
        (0..320).map(|i| (i % 17) as f32 / 16.0).collect(),
    )
    .unwrap();
    let got = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let mut inputs = vec![x];
    inputs.extend(
        s.model
            .states
            .iter()
            .map(|_| Tensor::zeros(hlstm_ir::DType::F32, &[5, 6])),
    );
    inputs.extend(s.param_tensors());
    let want = interp::run(&s.forward.graph, &inputs).unwrap();
    assert_eq!(got[0].shape(), &[5, 10]);
    let (a, b) = (got[0].as_f32().unwrap(), want[0].as_f32().unwrap());
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-5, "max difference {err}");
    // A fixed export batch gives a static X.
    let mut cfg = digits("[export]\nbatch = 5");
    cfg.train.epochs = 0;
    let s = Session::new(&cfg, &Interp).unwrap();
    let g =
        hlstm_frontends::onnx::import_bytes(&hlstm_trainer::export::onnx_bytes(&s).unwrap(), None)
            .unwrap();
    assert_eq!(
        g.value_type(hlstm_ir::Value {
            node: g.inputs[0],
            slot: 0
        })
        .concrete(),
        Some(vec![8, 5, 8])
    );
}

fn text(window: usize, extra: &str) -> Config {
    let t = format!(
        r#"
[data]
format = "text"
path = "text/fortunes-head.txt"
window = {window}
max_chars = 2000
[model]
cell = "lstm"
hidden = 8
embed = 4
[train]
epochs = 1
batch = 4
optimizer = "sgd"
lr = 0.5
{extra}
"#
    );
    Config::parse(&t, data_dir()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn language_model_bits_per_character_carry_the_state() {
    let mut s = Session::new(&text(10, ""), &Interp).unwrap();
    let sum = train::run(&mut s, &mut ()).unwrap();
    let bpc = sum.test.bpc.unwrap();
    assert!(bpc > 0.5 && bpc < 8.0, "{bpc}");
    // The state is carried across windows, so the window length of evaluation does not change
    // the result (only rounding): windows of 10 and of 7 characters agree.
    let mut s7 = Session::new(&text(7, ""), &Interp).unwrap();
    s7.params = s.params.clone();
    let b7 = s7.evaluate(Split::Test).unwrap().bpc.unwrap();
    assert!((bpc - b7).abs() < 1e-4, "{bpc} vs {b7}");
    // An untrained model is worse than the trained one.
    let fresh = Session::new(&text(10, ""), &Interp)
        .unwrap()
        .evaluate(Split::Test)
        .unwrap();
    assert!(fresh.bpc.unwrap() > bpc);
}

#[test]
fn bad_configs_are_errors_naming_the_key() {
    let base = data_dir();
    let e = |t: &str| Config::parse(t, base).unwrap_err().to_string();
    let ok = "[data]\nformat = \"text\"\npath = \"x\"\nwindow = 5\n[model]\ncell = \"lstm\"\nhidden = 4\n";
    assert!(Config::parse(ok, base).is_ok());
    assert!(e(&format!("{ok}[train]\nbatchsize = 3\n")).contains("batchsize"));
    assert!(e(&ok.replace("\"lstm\"", "\"gru\"")).contains("gru"));
    assert!(e(&format!("{ok}[train]\nlr = -1.0\n")).contains("train.lr"));
    assert!(e(&format!("{ok}[gp]\ntarget_density = 0.0\n")).contains("gp.target_density"));
    assert!(e(&ok.replace("window = 5\n", "")).contains("window"));
    assert!(e("[data\n").contains("TOML") || !e("[data\n").is_empty());
    let missing = Config::load(Path::new("/nonexistent/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("cannot read"), "{missing}");
    // Data problems surface when the session starts.
    let cfg = Config::parse(&ok.replace("\"x\"", "\"nope.txt\""), base).unwrap();
    let err = Session::new(&cfg, &Interp).err().unwrap().to_string();
    assert!(err.contains("nope.txt"), "{err}");
    let mut big = digits("");
    big.train.batch = 5000;
    let err = Session::new(&big, &Interp)
        .and_then(|mut s| train::run(&mut s, &mut ()).map(|_| ()))
        .unwrap_err();
    assert!(err.to_string().contains("train.batch"), "{err}");
    let mut ex = digits(GP);
    ex.gp.as_mut().unwrap().exclude = vec!["nope".into()];
    assert!(
        Session::new(&ex, &Interp)
            .err()
            .unwrap()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn growth_masks_feed_zero_weights_but_get_dense_gradients() {
    // After seeding at 50%, one growth epoch accumulates |dL/dw| for dormant connections too.
    let mut s = Session::new(&digits(GP), &Interp).unwrap();
    let mut acc: Vec<Vec<f32>> = s.params.iter().map(|p| vec![0.0; p.len()]).collect();
    s.epoch(0.01, Some(&mut acc), &mut |_, _, _| true).unwrap();
    let (i, m) = s
        .masks
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.as_ref().map(|m| (i, m)))
        .unwrap();
    let dormant_scored = m
        .iter()
        .zip(&acc[i])
        .filter(|(on, a)| !**on && **a > 0.0)
        .count();
    assert!(dormant_scored > 0);
    let before = gp::density(&s.masks).0;
    let grown = gp::grow(&mut s.masks, &acc, 0.1, gp::Scope::Global);
    assert_eq!(gp::density(&s.masks).0, before + grown.len());
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn stacked_lstms_export_as_lstm_ops() {
    // A two-layer classifier: X -> logits, zero initial states inside the LSTM ops.
    let mut cfg = digits("");
    cfg.model.cell = hlstm_trainer::config::Cell::Lstm;
    cfg.model.layers = 2;
    let s = Session::new(&cfg, &Interp).unwrap();
    let bytes = hlstm_trainer::export::onnx_bytes(&s).unwrap();
    let g = hlstm_frontends::onnx::import_bytes(&bytes, None).unwrap();
    let x = Tensor::from_f32(
        &[8, 3, 8],
        (0..192).map(|i| ((i * 7) % 13) as f32 / 12.0).collect(),
    )
    .unwrap();
    let got = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let mut inputs = vec![x];
    inputs.extend((0..4).map(|_| Tensor::zeros(hlstm_ir::DType::F32, &[3, 6])));
    inputs.extend(s.param_tensors());
    let want = interp::run(&s.forward.graph, &inputs).unwrap();
    assert!(max_diff(&got[0], &want[0]) < 1e-5);
    // A two-layer language model streams: tokens and states in, logits and states out.
    let mut cfg = text(5, "");
    cfg.model.layers = 2;
    let s = Session::new(&cfg, &Interp).unwrap();
    let g =
        hlstm_frontends::onnx::import_bytes(&hlstm_trainer::export::onnx_bytes(&s).unwrap(), None)
            .unwrap();
    let tokens = Tensor::from_i64(&[4, 2], vec![1, 2, 3, 4, 5, 6, 7, 0]).unwrap();
    let mut ins = vec![tokens];
    ins.extend((0..4).map(|k| {
        Tensor::from_f32(
            &[2, 8],
            (0..16).map(|i| ((i + k) as f32 * 0.3).sin()).collect(),
        )
        .unwrap()
    }));
    let got = interp::run(&g, &ins).unwrap();
    ins.extend(s.param_tensors());
    let want = interp::run(&s.forward.graph, &ins).unwrap();
    assert_eq!(got.len(), 5);
    for (a, b) in got.iter().zip(&want) {
        assert!(max_diff(a, b) < 1e-5);
    }
}

fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
) {
    use npyz::WriterBuilder;
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(f)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn npy_data_trains_like_csv() {
    // The first 100 digits rows as .npy (x as f64 pixels [100, 8, 8], y as i32) give the same
    // samples as the CSV loader reading the same rows.
    let dir = std::env::temp_dir().join(format!("hlstm-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table = hlstm_trainer::data::read_csv(&data_dir().join("digits/digits.csv.gz")).unwrap();
    let x: Vec<f64> = (0..100).flat_map(|r| table.row(r)[..64].to_vec()).collect();
    let y: Vec<i32> = (0..100).map(|r| table.row(r)[64] as i32).collect();
    write_npy(&dir.join("x.npy"), &[100, 8, 8], &x);
    write_npy(&dir.join("y.npy"), &[100], &y);
    let text = r#"
[data]
format = "npy"
x = "x.npy"
y = "y.npy"
scale = 0.0625
split = { modulus = 5, test = [4], validation = [3] }
[model]
cell = "lstm"
hidden = 4
[train]
epochs = 1
batch = 20
"#;
    let cfg = Config::parse(text, &dir).unwrap();
    let s = Session::new(&cfg, &Interp).unwrap();
    let train::Task::Classify { train: t, test, .. } = &s.task else {
        panic!("a classifier")
    };
    assert_eq!((t.len(), test.len()), (60, 20));
    let from_csv = hlstm_trainer::data::SeqSet::from_table(&table, 8, 8, 0, 64, 0.0625).unwrap();
    assert_eq!(test.x[..64], from_csv.x[4 * 64..5 * 64]);
    assert_eq!(test.y[0], from_csv.y[4]);
    // Wrong shapes are errors.
    write_npy(&dir.join("y.npy"), &[99], &y[..99]);
    let err = Session::new(&cfg, &Interp).err().unwrap().to_string();
    assert!(err.contains("[samples]"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn absurd_sizes_are_errors_not_allocations() {
    let mut cfg = digits("");
    cfg.model.hidden = 1 << 20;
    let err = Session::new(&cfg, &Interp).err().unwrap().to_string();
    assert!(
        err.contains("over the limit") && err.contains("--limit elements="),
        "{err}"
    );
    let mut cfg = digits("");
    cfg.model.hidden_width = Some(1 << 40);
    let err = Session::new(&cfg, &Interp).err().unwrap().to_string();
    assert!(err.contains("over the limit"), "{err}");
}

/// Every shipped config (the digits example and the text experiments of docs/results.md) parses
/// and passes the checks; a key typo there would otherwise show only hours into a run.
#[test]
fn shipped_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = vec![root.join("examples/digits-hlstm.toml")];
    let mut text: Vec<_> = std::fs::read_dir(root.join("examples/text"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    text.sort();
    assert_eq!(text.len(), 7, "{text:?}");
    paths.extend(text);
    for p in &paths {
        let c = Config::load(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(c.train.batch, 32, "{}", p.display());
    }
}
