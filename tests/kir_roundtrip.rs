//! The `.kir` parser against the printer: the kernel program of every fixture model (imported,
//! optimized with the default pipeline, lowered; and its variants: each weight strategy, the
//! split across threads, a run-time batch) prints, parses back to the same program, prints the
//! same text, and runs to the same outputs in the kernel interpreter. Damaged text is an error,
//! never a panic.

use hlstm_frontends::onnx::import_file;
use hlstm_ir::kernel::{
    self, BatchAxes, Program, Strategy, parse, parse_with_weights, print, print_with_weights,
};
use hlstm_passes::lower::{LowerOptions, lower};
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};
use std::path::{Path, PathBuf};

fn fixture_dirs() -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .expect("tests/fixtures/models exists")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    v
}

fn optimized(dir: &Path) -> hlstm_ir::Graph {
    let mut g = import_file(&dir.join("model.onnx")).expect("the fixture imports");
    let pm = PassManager::new(DEFAULT_PIPELINE, Default::default()).expect("pipeline");
    pm.run(&mut g, &mut std::io::sink()).expect("optimizes");
    g
}

/// Deterministic inputs in [-1, 1) (the sequence lengths, if any, the full length).
fn inputs(p: &Program) -> Vec<Vec<f32>> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    p.inputs
        .iter()
        .map(|b| {
            let buf = &p.buffers[b.0];
            if p.seq_lens == Some(*b) {
                let t = p.max_steps.unwrap_or(1) as f32;
                let steps = p
                    .buffers
                    .iter()
                    .map(|x| x.dims.first().copied().unwrap_or(1));
                let t = steps.max().map_or(t, |m| m as f32);
                return vec![t; buf.len()];
            }
            (0..buf.len())
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        })
        .collect()
}

/// Print, parse, print again: the same text and the same program; the same outputs.
fn round_trip(label: &str, p: &Program) {
    let (text, store) = print_with_weights(p);
    assert_eq!(
        text,
        print(p),
        "{label}: print and print_with_weights differ"
    );
    let q = parse_with_weights(&text, &store)
        .unwrap_or_else(|e| panic!("{label}: the printed program does not parse: {e}\n{text}"));
    assert_eq!(print(&q), text, "{label}: the text changes in a round trip");
    assert!(
        q == *p,
        "{label}: the parsed program differs from the printed one"
    );
    let ins = inputs(p);
    let refs: Vec<&[f32]> = ins.iter().map(Vec::as_slice).collect();
    let want = kernel::interp::run(p, &refs);
    let got = kernel::interp::run(&q, &refs);
    match (want, got) {
        (Ok(w), Ok(g)) => {
            let same = w.len() == g.len()
                && w.iter().zip(&g).all(|(a, b)| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                });
            assert!(same, "{label}: the parsed program computes other outputs");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "{label}"),
        (w, g) => panic!("{label}: the runs differ: {w:?} / {g:?}"),
    }
}

#[test]
fn fixture_programs_round_trip() {
    let dirs = fixture_dirs();
    assert!(!dirs.is_empty());
    let mut lowered = 0;
    for d in &dirs {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        let g = optimized(d);
        let p = match lower(&g, &LowerOptions::default()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{name}: not lowered ({e})");
                continue;
            }
        };
        lowered += 1;
        round_trip(&name, &p);
        for s in [
            Strategy::Dense,
            Strategy::SparseUnrolled,
            Strategy::SparseCsr,
        ] {
            let opts = LowerOptions {
                strategy: Some(s),
                ..Default::default()
            };
            let q = lower(&g, &opts).expect("lowers with a forced strategy");
            round_trip(&format!("{name} ({})", s.name()), &q);
        }
        for (i, t) in hlstm_passes::lower::threads::split(&p, 2)
            .iter()
            .enumerate()
        {
            round_trip(&format!("{name} (thread {i} of 2)"), t);
        }
    }
    assert!(lowered >= dirs.len() / 2, "only {lowered} fixtures lower");
}

#[test]
fn batch_axes_round_trip() {
    let d = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("lstm_std_X16_H24_T5_batch3"))
        .expect("the batch-3 fixture");
    let mut p = lower(&optimized(&d), &LowerOptions::default()).expect("lowers");
    let axes = BatchAxes {
        max: 3,
        inputs: p
            .inputs
            .iter()
            .map(|b| p.buffers[b.0].dims.iter().position(|&x| x == 3))
            .collect(),
        outputs: p
            .outputs
            .iter()
            .map(|b| p.buffers[b.0].dims.iter().position(|&x| x == 3))
            .collect(),
    };
    hlstm_passes::lower::batch::dynamic_batch(&mut p, axes).expect("batch elements independent");
    assert!(
        print(&p).contains("\nbatch max 3 inputs ["),
        "{}",
        print(&p)
    );
    round_trip("batch", &p);
}

/// A small program written by hand: every statement kind and header line.
const HAND: &str = r#"program "hand \"made\""
steps 1..=2
buffer %0 "X" input 0 [2,1,2] 2/step
buffer %1 "Y" output 0 [2,1,2] 2/step
buffer %2 "h" temp [1,2]
buffer %3 "W" input 1 [2,2]
const $0 "w" [2,2] nnz 2 [1.0, 0.0, 0.0, -0.5]
const $1 "m" [2,2] nnz 1 [0.0, 1.0, 0.0, 0.0]
start {
  copy %2[+0; 1x2 : 2,1] = $0[+0; 1x2 : 0,1]
}
loop t in 0..steps (steps <= 2) {
  matmul %1[+0 +2t; 1x2 : 2,1] = %0[+0 +2t; 1x2 : 2,1] x $0 (sparse-unrolled)
  matmul %2[+0; 1x2 : 2,1] = %1[+0 +2t; 1x2 : 2,1] x %3[+0; 2x2 : 2,1] (masked by $1, run-time)
  leaky_relu{alpha=0.1} %2[+0; 1x2 : 2,1] = %2[+0; 1x2 : 2,1]
  clip %2[+0; 1x2 : 2,1] = %2[+0; 1x2 : 2,1] in [-inf, 1.5]
  add %1[+0 +2t; 1x2 : 2,1] = %1[+0 +2t; 1x2 : 2,1], %2[+0; 1x2 : 2,1]
  barrier
}
loop t in 2..0 (reverse) {
  log_softmax %1[+0 +2t; 1x2 : 2,1] = %1[+0 +2t; 1x2 : 2,1] over the last dim
}
"#;

#[test]
fn hand_written_program_round_trips() {
    let p = parse(HAND).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.name, "hand \"made\"");
    assert_eq!(p.inputs.len(), 2);
    assert_eq!(print(&p), HAND);
    round_trip("hand", &p);
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("", "line 1: expected 'program \"NAME\"'"),
        (
            "program \"a\"\nbuffer %1 \"x\" temp [1]\n",
            "line 2: buffer %1 out of order",
        ),
        (
            "program \"a\"\nbuffer %0 \"x\" temp [2]\ncopy %0[+0; 3 : 1] = %0[+0; 2 : 1]\n",
            "line 3: the view reaches elements 0 to 2 of storage with 2",
        ),
        (
            "program \"a\"\nbuffer %0 \"x\" temp [2]\nloop t in 0..2 {\n",
            "expected '}' to close the block opened on line 3",
        ),
        (
            "program \"a\"\nbuffer %0 \"x\" temp [2]\nfrobnicate %0[+0; 2 : 1] = %0[+0; 2 : 1]\n",
            "line 3: unknown statement 'frobnicate'",
        ),
        (
            "program \"a\"\nconst $0 \"w\" [20] nnz 0 sha256:00\n",
            "line 2: '00' is not a sha256 hash",
        ),
        (
            "program \"a\"\nconst $0 \"w\" [2] nnz 2 [1.0, 0.0]\n",
            "line 2: constant $0 says nnz 2, but its data has 1 nonzeros",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text);
        assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
    }
}

#[test]
fn damaged_text_is_an_error_not_a_panic() {
    // Every prefix (by characters) and every single-line deletion of real texts.
    let d = fixture_dirs()
        .into_iter()
        .find(|d| d.ends_with("hlstm_scan_X16_H24_T5_batch3"))
        .expect("a small fixture");
    let p = lower(&optimized(&d), &LowerOptions::default()).expect("lowers");
    let (text, store) = print_with_weights(&p);
    for t in [text.as_str(), HAND] {
        let chars: Vec<(usize, char)> = t.char_indices().collect();
        for (i, _) in chars.iter().step_by(3) {
            let _ = parse_with_weights(&t[..*i], &store);
        }
        let lines: Vec<&str> = t.lines().collect();
        for i in 0..lines.len() {
            let mut v = lines.clone();
            v.remove(i);
            let _ = parse_with_weights(&v.join("\n"), &store);
        }
    }
    let deep = format!(
        "program \"a\"\n{}{}",
        "loop t in 0..1 {\n".repeat(200),
        "}\n".repeat(200)
    );
    assert!(
        parse(&deep)
            .unwrap_err()
            .contains("nested 65 deep, over the limit of 64")
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_text_does_not_panic(s in "[ -~\n]{0,200}") {
            let _ = parse(&format!("program \"p\"\nbuffer %0 \"b\" temp [4]\n{s}"));
            let _ = parse(&s);
        }

        #[test]
        fn mutated_text_does_not_panic(i in 0usize..2000, c in "[ -~\n]{1,3}") {
            let mut t = HAND.to_string();
            let i = i % t.len();
            if t.is_char_boundary(i) {
                t.insert_str(i, &c);
                let _ = parse(&t);
            }
        }
    }
}
