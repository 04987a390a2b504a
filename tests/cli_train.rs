//! `hlstmc train` end to end on a tiny config: the model and everything beside it, the model
//! runs in `hlstmc run`, and bad configs fail with a message and no panic.

use std::path::Path;
use std::process::Command;

fn hlstmc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hlstmc"))
}

fn digits_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/data/digits/digits.csv.gz");
    let text = format!(
        r#"
seed = 3
[data]
format = "csv"
path = "{}"
steps = 8
features = 8
scale = 0.0625
split = {{ modulus = 5, test = [4], validation = [3] }}
[model]
cell = "hlstm"
hidden = 6
hidden_width = 5
[train]
epochs = 1
batch = 128
[gp]
seed_density = 0.6
grow_rounds = 1
prune_ratio = 0.5
target_density = 0.4
retrain_epochs = 1
tolerance = 1.0
{extra}
"#,
        data.display()
    );
    let p = dir.join("tiny.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn train_writes_the_model_log_plots_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = digits_config(dir.path(), "");
    let model = dir.path().join("out/tiny.onnx");
    let out = hlstmc()
        .arg("train")
        .arg(&cfg)
        .arg("-o")
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("test accuracy") && err.contains("nonzero weights"),
        "{err}"
    );
    let o = dir.path().join("out");
    for f in [
        "tiny.onnx",
        "tiny.config.toml",
        "tiny.curves.svg",
        "tiny.summary.json",
        "tiny.mask.l0.i.svg",
        "tiny.mask.head.svg",
    ] {
        assert!(o.join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(o.join("tiny.log.jsonl")).unwrap();
    let kinds: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in ["epoch", "grow", "prune", "test"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} record in {log}");
    }
    // One numbering: epochs and rounds count from 1 in the log and on the screen, and each
    // epoch's line says how long the run has taken and about how long is left.
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["epoch"], 1, "{log}");
    assert!(err.contains("epoch   1 train"), "{err}");
    assert!(
        err.contains("grow round 1:") && err.contains("prune round 1:"),
        "{err}"
    );
    assert!(
        err.contains(" elapsed, about ") && err.contains(" left]"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(o.join("tiny.config.toml")).unwrap(),
        std::fs::read_to_string(&cfg).unwrap()
    );
    // The same seed writes the same log.
    let again = dir.path().join("again/tiny.onnx");
    assert!(
        hlstmc()
            .arg("train")
            .arg(&cfg)
            .arg("-o")
            .arg(&again)
            .arg("-q")
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        log,
        std::fs::read_to_string(dir.path().join("again/tiny.log.jsonl")).unwrap()
    );
    // The model runs in hlstmc.
    let x = dir.path().join("x.npy");
    let f = std::io::BufWriter::new(std::fs::File::create(&x).unwrap());
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[8, 3, 8])
        .writer(f)
        .begin_nd()
        .unwrap();
    w.extend((0..192).map(|i| (i % 7) as f32 / 6.0)).unwrap();
    w.finish().unwrap();
    let run = hlstmc()
        .args(["run", "--engine", "interp"])
        .arg(&model)
        .arg(format!("-i=X={}", x.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.contains("logits: f32[3,10]"),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn bad_configs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    // An unknown key in a section the config already has is named.
    {
        let (extra, want) = ("growth = 2\n", "growth");
        let cfg = digits_config(dir.path(), extra);
        let out = hlstmc()
            .arg("train")
            .arg(&cfg)
            .arg("-o")
            .arg(&model)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && !err.contains("panicked"),
            "{err}"
        );
    }
    let bad = dir.path().join("bad.toml");
    for (text, want) in [
        ("[data\n", "tiny"),
        ("[data]\nformat = \"csv\"\n", "missing field"),
        (
            "[data]\nformat = \"text\"\npath = \"none.txt\"\nwindow = 4\n[model]\ncell = \"lstm\"\nhidden = 4\n",
            "none.txt",
        ),
        (
            "[data]\nformat = \"text\"\npath = \"x\"\nwindow = 4\n[model]\ncell = \"lstm\"\nhidden = 0\n",
            "model.hidden",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = hlstmc()
            .arg("train")
            .arg(&bad)
            .arg("-o")
            .arg(&model)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        assert!(want == "tiny" || err.contains(want), "{text}: {err}");
    }
    let out = hlstmc()
        .args(["train", "/nonexistent.toml", "-o"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn shipped_digits_model_matches_onnx_runtime() {
    // ONNX Runtime's logits for the whole test split are stored beside the model
    // (tools/digits_reference.py); the interpreter, unoptimized and optimized, agrees with them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("examples/digits-hlstm.onnx");
    let data = root.join("examples/digits-hlstm/test_data_set_0");
    for opt in ["-O0", "-O1"] {
        let out = hlstmc()
            .args(["run", "--engine", "interp", opt])
            .arg(&model)
            .arg("--test-data")
            .arg(&data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("PASS"),
            "{opt}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
