//! `hlstmc eval MODEL --text FILE` on tiny character models trained here: its bits per
//! character against an independent computation (the whole text as one sequence in the
//! reference interpreter at -O0, softmax and log2 done here in f64, the vocabulary rebuilt here
//! from the training text), against the trainer's own test number, the JSON form, and the
//! errors.

use hlstmc::{BuildOptions, DType, Engine, Model, Tensor};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hlstmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .args(args)
        .output()
        .unwrap()
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/data/text/fortunes-head.txt")
}

const MAX_CHARS: usize = 3000;

/// Trains a tiny character model (`cell`: "lstm" is exported as ONNX LSTM ops, "hlstm" as
/// Scans) on the first 3000 characters of the fortunes head; returns the model's path.
fn train(dir: &Path, cell: &str) -> PathBuf {
    let (model, gp) = if cell == "hlstm" {
        (
            "hidden_width = 6",
            "[gp]\nseed_density = 0.6\ngrow_rounds = 1\nprune_ratio = 0.5\n\
             target_density = 0.4\nretrain_epochs = 1\ntolerance = 10.0\n",
        )
    } else {
        ("layers = 2", "")
    };
    let cfg = format!(
        "seed = 2\n[data]\nformat = \"text\"\npath = \"{}\"\nwindow = 12\n\
         max_chars = {MAX_CHARS}\n[model]\ncell = \"{cell}\"\nhidden = 8\nembed = 4\n{model}\n\
         [train]\nepochs = 1\nbatch = 4\nlr = 0.01\n{gp}",
        data().display(),
    );
    let path = dir.join(format!("{cell}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let model = dir.join(format!("{cell}.onnx"));
    let o = hlstmc(&[
        "train",
        path.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    model
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["eval"];
    all.extend(args);
    all.push("--json");
    let o = hlstmc(&all);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Bits per character of `text` computed independently: the vocabulary is the sorted set of
/// the training text's characters, the whole text runs as one sequence from zero states in the
/// reference interpreter at -O0, and the log-softmax is computed here.
fn reference_bpc(model: &Path, text: &str) -> f64 {
    let train: String = std::fs::read_to_string(data())
        .unwrap()
        .chars()
        .take(MAX_CHARS)
        .collect();
    let vocab: Vec<char> = train.chars().collect::<BTreeSet<_>>().into_iter().collect();
    let ids: Vec<i64> = text
        .chars()
        .map(|c| vocab.binary_search(&c).unwrap() as i64)
        .collect();
    let m = Model::load(model).unwrap();
    let infos = m.inputs();
    let t = ids.len() - 1;
    let inputs: Vec<Tensor> = infos
        .iter()
        .map(|i| {
            if i.ty.dtype == DType::I64 {
                Tensor::from_i64(&[t, 1], ids[..t].to_vec()).unwrap()
            } else {
                let h = i.ty.shape.as_ref().unwrap()[1].known().unwrap();
                Tensor::zeros(DType::F32, &[1, h])
            }
        })
        .collect();
    let r = m
        .specialize_to(&inputs)
        .unwrap()
        .into_runnable(&BuildOptions {
            engine: Engine::Interp,
            ..BuildOptions::default()
        })
        .unwrap();
    let k = r.outputs().iter().position(|o| o.name == "logits").unwrap();
    let out = r.run(&inputs).unwrap();
    let logits: Vec<f32> = out[k].as_f32().unwrap().iter().copied().collect();
    let v = vocab.len();
    assert_eq!(logits.len(), t * v);
    let mut bits = 0.0;
    for (row, &next) in logits.chunks(v).zip(&ids[1..]) {
        let max = row.iter().fold(f64::MIN, |m, &x| m.max(x as f64));
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let logp = row[next as usize] as f64 - max - sum.ln();
        bits -= logp / std::f64::consts::LN_2;
    }
    bits / t as f64
}

#[test]
fn bits_per_character_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read_to_string(data()).unwrap();
    // A piece of the training text: every character is in the vocabulary.
    let piece: String = full.chars().skip(500).take(347).collect();
    let text = dir.path().join("piece.txt");
    std::fs::write(&text, &piece).unwrap();
    let text = text.to_str().unwrap();
    for cell in ["lstm", "hlstm"] {
        let model = train(dir.path(), cell);
        let model = model.to_str().unwrap();
        let want = reference_bpc(Path::new(model), &piece);
        for args in [
            vec![model, "--text", text],
            vec![model, "--text", text, "--window", "7"],
            vec![
                model, "--text", text, "--engine", "interp", "--window", "1000",
            ],
        ] {
            let j = eval_json(&args);
            let got = j["bits_per_char"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{cell} {args:?}: {got} vs {want}"
            );
            assert_eq!(j["characters"], 347);
            assert_eq!(j["predicted"], 346);
        }
        let j = eval_json(&[model, "--text", text, "--window", "7"]);
        assert_eq!(j["windows"], 346usize.div_ceil(7));
        assert_eq!(j["window"], 7);
        assert_eq!(j["engine"], "jit");
        // The default window is the trainer's (12), stored in the model.
        assert_eq!(eval_json(&[model, "--text", text])["window"], 12);

        // The text form: its last line.
        let o = hlstmc(&["eval", model, "--text", text]);
        assert!(o.status.success());
        let stdout = String::from_utf8(o.stdout).unwrap();
        let last = stdout.lines().last().unwrap();
        assert_eq!(last, format!("bits per character: {want:.3}"), "{stdout}");

        // The trainer's test slice reproduces the trainer's own test number.
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(model).with_extension("summary.json")).unwrap(),
        )
        .unwrap();
        let trained = summary["test_bpc"].as_f64().unwrap();
        let data = data();
        let j = eval_json(&[model, "--text", data.to_str().unwrap(), "--slice", "test"]);
        let got = j["bits_per_char"].as_f64().unwrap();
        assert!(
            (got - trained).abs() < 1e-3,
            "{cell}: {got} vs trainer {trained}"
        );
        assert_eq!(
            j["characters"],
            MAX_CHARS - (MAX_CHARS as f64 * 0.9) as usize
        );
        assert_eq!(j["to"], MAX_CHARS);

        // --from/--to: the same range as the piece.
        let j = eval_json(&[
            model,
            "--text",
            data.to_str().unwrap(),
            "--from",
            "500",
            "--to",
            "847",
        ]);
        let got = j["bits_per_char"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "{cell} --from/--to: {got} vs {want}"
        );
    }
}

#[test]
fn a_model_without_its_vocabulary_takes_vocab() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path(), "lstm");
    // The same graph written again by the library: no metadata.
    let bare = dir.path().join("bare.onnx");
    let bytes = Model::load(&model).unwrap().to_onnx("test").unwrap();
    std::fs::write(&bare, bytes).unwrap();
    let piece: String = std::fs::read_to_string(data())
        .unwrap()
        .chars()
        .take(200)
        .collect();
    let text = dir.path().join("piece.txt");
    std::fs::write(&text, &piece).unwrap();
    let (text, bare_s) = (text.to_str().unwrap(), bare.to_str().unwrap());
    let o = hlstmc(&["eval", bare_s, "--text", text]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("carries no vocabulary") && err.contains("--vocab"),
        "{err}"
    );
    // The vocabulary of the training text: the first MAX_CHARS characters.
    let train_text = dir.path().join("train.txt");
    let head: String = std::fs::read_to_string(data())
        .unwrap()
        .chars()
        .take(MAX_CHARS)
        .collect();
    std::fs::write(&train_text, head).unwrap();
    let with = eval_json(&[
        bare_s,
        "--text",
        text,
        "--vocab",
        train_text.to_str().unwrap(),
    ]);
    let own = eval_json(&[model.to_str().unwrap(), "--text", text]);
    assert!(
        (with["bits_per_char"].as_f64().unwrap() - own["bits_per_char"].as_f64().unwrap()).abs()
            < 1e-6
    );
    // Another text's vocabulary has another size.
    let o = hlstmc(&["eval", bare_s, "--text", text, "--vocab", text]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("but the model's logits have"), "{err}");
}

#[test]
fn errors_are_clear_and_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path(), "lstm");
    let model = model.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = write("empty.txt", "");
    let one = write("one.txt", "a");
    let odd = write("odd.txt", "the\nca\u{263a} sat");
    let classifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hlstm_sp97/model.onnx");
    let text = data();
    let text = text.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![model, "--text", "no/such.txt"],
            "cannot read no/such.txt",
        ),
        (vec!["no/such.onnx", "--text", text], "no/such.onnx"),
        (vec![model, "--text", &empty], "the text is empty"),
        (vec![model, "--text", &one], "too few"),
        (
            vec![model, "--text", &odd],
            "'\u{263a}' (U+263A) at character 6 (line 2, column 3) is not in the vocabulary",
        ),
        (
            vec![classifier.to_str().unwrap(), "--text", text],
            "not a character-level language model",
        ),
        (
            vec![model, "--text", text, "--from", "5", "--to", "5"],
            "at least 2",
        ),
        (
            vec![model, "--text", text, "--to", "99999999"],
            "--to 99999999",
        ),
        (vec![model, "--text", text, "--window", "0"], "--window"),
        (
            vec![model, "--text", text, "--slice", "test", "--from", "3"],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["eval"];
        all.extend(&args);
        let o = hlstmc(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(1 | 2)),
            "{args:?}: {:?} {err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in:\n{err}");
    }
}
