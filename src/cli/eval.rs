//! `hlstmc eval MODEL --text FILE`: a character-level language model's bits per character on a
//! text, computed as the trainer computes its test number (docs/trainer.md, "Data"): batch 1,
//! windows of `--window` characters with the recurrent state carried from one to the next, the
//! mean of -log2 p(next character) over characters 1.. of the text.

use super::engine::{Engine, build_options, check_threads};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use hlstmc::trainer::data::{self, Vocab};
use hlstmc::trainer::export::{TEXT_METADATA_KEY, TextMeta};
use hlstmc::trainer::train::task::cross_entropy;
use hlstmc::{DType, Model, Runnable, Tensor, TensorInfo};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Bits per character of a character-level language model on a text file.
///
/// The model is one `hlstmc train` writes for `data.format = "text"`: an int64 input of
/// character ids [T, N], state inputs h0.l<k>, c0.l<k> [N, H] and outputs logits [T, N, V],
/// hT.l<k>, cT.l<k>. The text runs through it at batch 1 in windows of --window characters,
/// the state carried from one window to the next (so the window changes only the speed), and
/// bits per character is the mean of -log2 p(next character) over characters 1.. of the text
/// (the first has no context): how the trainer computes its test number (docs/trainer.md).
///
/// The character ids are the model's vocabulary, which `hlstmc train` stores in the ONNX file
/// (metadata property hlstmc.text); for a model without it, --vocab FILE names the text the
/// model was trained on (its vocabulary is that file's sorted distinct characters, as the
/// trainer makes it). A character outside the vocabulary is an error naming it and its place.
///
/// --slice test (or validation, train) evaluates the trainer's split of FILE: the last 10% of
/// the characters are the test slice and the 5% before it validation, or the fractions the
/// model's metadata records; --from/--to evaluate any range of characters.
///
/// The last line of the output reads `bits per character: 2.345`; --json prints one JSON object
/// instead (bits_per_char, characters, predicted, windows, ...).
///
/// Examples:
///   hlstmc eval examples/text-hlstm.onnx --text examples/data/text/fortunes-en.txt.gz --slice test
///   hlstmc eval examples/text-hlstm.onnx --text examples/data/text/fortunes-en.txt.gz --from 0 --to 2000 --json
///   hlstmc eval examples/text-hlstm.onnx --text examples/data/text/fortunes-en.txt.gz --slice test --engine interp --window 500
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    /// The ONNX model (a character-level language model from `hlstmc train`).
    pub model: PathBuf,
    /// The text file (UTF-8; gunzipped when the name ends in .gz).
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Characters per window. Default: the trainer's window stored in the model, else 100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: Option<u64>,
    /// Evaluate only this part of the trainer's split of the text (applied after the model's
    /// data.max_chars, as the trainer does).
    #[arg(long, value_enum, default_value = "all", conflicts_with_all = ["from", "to"])]
    pub slice: Slice,
    /// The first character to evaluate (0-based character offset; default 0).
    #[arg(long, value_name = "K")]
    pub from: Option<usize>,
    /// One past the last character to evaluate (default: the end of the text).
    #[arg(long, value_name = "K")]
    pub to: Option<usize>,
    /// The text whose sorted distinct characters are the vocabulary (the file the model was
    /// trained on), instead of the vocabulary stored in the model.
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// Which engine runs the model.
    /// Default: jit, or the interpreter (with a note) for a model the JIT cannot take.
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// With --engine jit: threads that split each step's work (1 to 64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

/// Which part of the trainer's split to evaluate.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Slice {
    /// The whole text.
    All,
    /// The training part (before validation).
    Train,
    /// The validation fraction before the test slice.
    Validation,
    /// The last (test) fraction of the characters.
    Test,
}

impl Slice {
    fn name(self) -> &'static str {
        match self {
            Slice::All => "all",
            Slice::Train => "train",
            Slice::Validation => "validation",
            Slice::Test => "test",
        }
    }
}

/// The trainer's defaults for `data.validation` and `data.test`, for a model whose file does
/// not record them.
const DEFAULT_SPLIT: (f64, f64) = (0.05, 0.1);
/// The window when neither the flag nor the model gives one (the example configs' window).
const DEFAULT_WINDOW: usize = 100;

/// Where a character model's inputs and outputs are.
struct Interface {
    tokens: usize,
    /// (state input, the output that continues it, width H).
    states: Vec<(usize, usize, usize)>,
    logits: usize,
    vocab: usize,
}

pub fn main(a: EvalArgs) -> Result<ExitCode> {
    let opt = a.opt.options()?;
    opt.pass_manager()?;
    if let Some(e) = a.engine {
        check_threads(e.into(), a.threads)?;
        if matches!(e, Engine::Cuda) {
            super::check_cuda_driver()?;
        }
    }
    if let (Some(f), Some(t)) = (a.from, a.to)
        && f >= t
    {
        bail!("--from {f} --to {t}: the range must hold at least 2 characters");
    }
    let start = Instant::now();
    let (model, meta) = load(&a.model)?;
    let io = interface(&model).map_err(|why| {
        anyhow!(
            "{}: not a character-level language model as `hlstmc train` writes one: {why}; \
             expected an int64 input of character ids [T, N], state inputs h0.l<k> and c0.l<k> \
             [N, H] with outputs hT.l<k> and cT.l<k>, and an output logits [T, N, V] (its \
             inputs: {}; its outputs: {})",
            a.model.display(),
            describe(&model.inputs()),
            describe(&model.outputs())
        )
    })?;
    let vocab = match (&a.vocab, &meta) {
        (Some(f), _) => Vocab::of(&data::read_text(f)?),
        (None, Some(m)) => m.vocab.clone(),
        (None, None) => bail!(
            "{}: the model carries no vocabulary (ONNX metadata property {TEXT_METADATA_KEY}, \
             which `hlstmc train` writes); give --vocab FILE, the text it was trained on",
            a.model.display()
        ),
    };
    if vocab.len() != io.vocab {
        bail!(
            "the vocabulary has {} characters but the model's logits have {} classes{}",
            vocab.len(),
            io.vocab,
            if a.vocab.is_some() {
                " (--vocab names another text than the model was trained on?)"
            } else {
                ""
            }
        );
    }
    let window = a
        .window
        .map(|w| w as usize)
        .or(meta.as_ref().map(|m| m.window))
        .unwrap_or(DEFAULT_WINDOW);

    let mut text = data::read_text(&a.text)?;
    if text.is_empty() {
        bail!("{}: the text is empty", a.text.display());
    }
    if a.slice != Slice::All {
        data::truncate_chars(&mut text, meta.as_ref().and_then(|m| m.max_chars));
    }
    let n = text.chars().count();
    let (from, to) = match a.slice {
        Slice::All => {
            let to = a.to.unwrap_or(n);
            if to > n {
                bail!("--to {to}: {} has {n} characters", a.text.display());
            }
            (a.from.unwrap_or(0), to)
        }
        s => {
            let (v, t) = meta
                .as_ref()
                .map_or(DEFAULT_SPLIT, |m| (m.validation, m.test));
            let (va, vb) = data::split_bounds(n, v, t)?;
            match s {
                Slice::Train => (0, va),
                Slice::Validation => (va, vb),
                _ => (vb, n),
            }
        }
    };
    if to < from + 2 {
        bail!(
            "{}: characters {from}..{to} ({}) are too few; bits per character needs at least 2 \
             (the first has no context)",
            a.text.display(),
            to.saturating_sub(from)
        );
    }
    let s = vocab
        .encode_range(&text, from..to)
        .with_context(|| a.text.display().to_string())?;
    let s = &s[..];

    let mut runner = Runner {
        model,
        io: &io,
        built: Vec::new(),
        a: &a,
        opt,
    };
    let mut state: Vec<Tensor> = io
        .states
        .iter()
        .map(|&(_, _, h)| Tensor::zeros(DType::F32, &[1, h]))
        .collect();
    let (mut nats, mut right, mut predicted, mut windows) = (0.0, 0, 0, 0);
    let mut engine = None;
    let mut at = 0;
    while at + 1 < s.len() {
        let t = window.min(s.len() - 1 - at);
        let r = runner.get(t)?;
        engine.get_or_insert(r.engine().name());
        let mut inputs = vec![Tensor::zeros(DType::F32, &[0]); r.inputs().len()];
        inputs[io.tokens] = Tensor::from_i64(&[t, 1], s[at..at + t].to_vec()).expect("sizes agree");
        for (&(k, _, _), v) in io.states.iter().zip(&state) {
            inputs[k] = v.clone();
        }
        let out = r.run(&inputs)?;
        let (l, h, k) = cross_entropy(&out[io.logits], &s[at + 1..at + 1 + t])?;
        (nats, right, predicted) = (nats + l, right + h, predicted + k);
        state = io.states.iter().map(|&(_, o, _)| out[o].clone()).collect();
        at += t;
        windows += 1;
    }
    let nats = nats / predicted as f64;
    let bpc = nats / std::f64::consts::LN_2;
    let engine = engine.unwrap_or("none");
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let j = serde_json::json!({
            "model": a.model.display().to_string(),
            "text": a.text.display().to_string(),
            "slice": if a.from.is_some() || a.to.is_some() { "range" } else { a.slice.name() },
            "from": from,
            "to": to,
            "characters": to - from,
            "predicted": predicted,
            "window": window,
            "windows": windows,
            "engine": engine,
            "vocab_size": vocab.len(),
            "bits_per_char": bpc,
            "nats_per_char": nats,
            "accuracy": right as f64 / predicted as f64,
            "seconds": secs,
        });
        outln!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let part = match a.slice {
            Slice::All if from == 0 && to == n => String::new(),
            Slice::All => format!(", characters {from}..{to}"),
            s => format!(", the {} slice (characters {from}..{to})", s.name()),
        };
        outln!("model: {} (engine {engine})", a.model.display());
        outln!("text: {}{part}", a.text.display());
        outln!(
            "{predicted} characters predicted in {windows} windows of up to {window}, the state \
             carried; next-character accuracy {:.2}%; {secs:.1} s",
            100.0 * right as f64 / predicted as f64
        );
        outln!("bits per character: {bpc:.3}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The model (read once) and its text metadata, if it has any.
fn load(path: &Path) -> Result<(Model, Option<TextMeta>)> {
    let bytes = hlstmc::frontends::onnx::read_model_file(path)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let named = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let proto = hlstmc::frontends::onnx::parse_model_bytes(&bytes).map_err(|e| named(&e))?;
    let meta = TextMeta::read_from(&proto).map_err(|e| named(&e))?;
    drop(bytes);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The decoded protobuf is imported as it is: the weights are decoded once.
    let model = Model::from_parsed(proto, Some(dir)).map_err(|e| named(&e))?;
    for w in model.warnings() {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok((model, meta))
}

fn describe(infos: &[TensorInfo]) -> String {
    let all: Vec<String> = infos
        .iter()
        .map(|i| format!("{} {}", i.name, i.ty))
        .collect();
    all.join(", ")
}

/// The positions of a character model's inputs and outputs, or why it is not one.
fn interface(m: &Model) -> std::result::Result<Interface, String> {
    let (ins, outs) = (m.inputs(), m.outputs());
    let rank = |i: &TensorInfo| i.ty.shape.as_ref().map(|s| s.len());
    let tokens: Vec<usize> = (0..ins.len())
        .filter(|&k| ins[k].ty.dtype != DType::F32)
        .collect();
    let tokens = match tokens[..] {
        [k] if ins[k].ty.dtype == DType::I64 && rank(&ins[k]) == Some(2) => k,
        [k] => return Err(format!("input {} is not int64 [T, N]", ins[k].name)),
        _ => {
            return Err(format!(
                "it has {} non-float inputs, not one of character ids",
                tokens.len()
            ));
        }
    };
    let logits = outs
        .iter()
        .position(|o| o.name == "logits")
        .ok_or("it has no output named logits")?;
    let vocab = match outs[logits].ty.shape.as_deref() {
        Some([_, _, v]) => v.known().ok_or("the logits' last dim is not known")?,
        _ => return Err("the logits are not [T, N, V]".into()),
    };
    let mut states = Vec::new();
    for (k, i) in ins.iter().enumerate().filter(|&(k, _)| k != tokens) {
        let h = match i.ty.shape.as_deref() {
            Some([_, h]) => h.known(),
            _ => None,
        };
        let out = ["h0.", "c0."]
            .iter()
            .find(|p| i.name.starts_with(*p))
            .map(|p| format!("{}T.{}", &p[..1], &i.name[p.len()..]))
            .ok_or_else(|| format!("input {} is not a state h0.<name> or c0.<name>", i.name))?;
        let o = outs
            .iter()
            .position(|o| o.name == out)
            .ok_or_else(|| format!("state input {} has no output {out}", i.name))?;
        let h = h.ok_or_else(|| format!("state input {} is not [N, H] with H known", i.name))?;
        states.push((k, o, h));
    }
    if states.is_empty() {
        return Err("it has no state inputs, so the state cannot be carried across windows".into());
    }
    Ok(Interface {
        tokens,
        states,
        logits,
        vocab,
    })
}

/// The model built for each window length it is run at (the full window, and the last,
/// shorter one): specialized to [T, 1], optimized, built.
struct Runner<'a> {
    model: Model,
    io: &'a Interface,
    built: Vec<(usize, Arc<dyn Runnable>)>,
    a: &'a EvalArgs,
    opt: hlstmc::OptimizeOptions,
}

impl Runner<'_> {
    fn get(&mut self, t: usize) -> Result<Arc<dyn Runnable>> {
        if let Some((_, r)) = self.built.iter().find(|(w, _)| *w == t) {
            return Ok(r.clone());
        }
        let mut shapes = vec![Vec::new(); self.model.inputs().len()];
        shapes[self.io.tokens] = vec![t, 1];
        for &(k, _, h) in &self.io.states {
            shapes[k] = vec![1, h];
        }
        let model = self
            .model
            .clone()
            .specialize_to_shapes(&shapes)
            .with_context(|| format!("{} (at a window of {t})", self.a.model.display()))?
            .optimize(&self.opt)?;
        let opts =
            |e: hlstmc::Engine| build_options(e, None, super::engine::Cpu::Native, self.a.threads);
        let r = match self.a.engine {
            Some(e) => model.into_runnable(&opts(e.into()))?,
            None => {
                let (r, fallback) = model.into_runnable_or_interp(&opts(hlstmc::Engine::Jit))?;
                if let Some(e) = fallback.filter(|_| self.built.is_empty()) {
                    eprintln!("note: {e}; running the interpreter instead");
                }
                r
            }
        };
        self.built.push((t, r.clone()));
        Ok(r)
    }
}
