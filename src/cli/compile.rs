//! `hlstmc compile`: ahead-of-time compilation to an object file, a shared and a static library
//! and a C header (docs/c-abi.md).

use super::opt::SparseStrategy;
use super::run::Cpu;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use hlstm_backends::cpu::aot::{self, TensorInfo};
use hlstm_backends::cpu::{CpuIsa, CpuOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Compile a model ahead of time into a library with a C ABI.
///
/// Writes, by default, NAME.o (position-independent), libNAME.so (made with `cc -shared`),
/// libNAME.a (made with `ar rcs`) and NAME.h into DIR. Every exported symbol starts with NAME_;
/// docs/c-abi.md describes the ABI (contexts, whole sequences of a run-time length, one step at a
/// time). `--emit clif,asm,kir` also writes the lower levels: NAME.clif (Cranelift IR), NAME.s
/// (the machine instructions after register allocation) and NAME.kir (the kernel IR). The files
/// are written under temporary names and renamed once all of them are made, so each is whole or
/// absent. `cc` and `ar` (or $CC and $AR) are needed only for `so` and `a`.
///
/// With --target ptx: NAME.ptx and NAME.launch.json, and the same library and header over the
/// CUDA driver (generated C compiled by `cc`: needed for obj, so and a; link with -ldl).
/// `--emit ptx` writes only the PTX and its launch description, `--emit c` adds NAME_host.c.
///
/// Examples:
///   hlstmc compile model.onnx -o build/ --name hlstm
///   cc -O2 main.c -Ibuild build/libhlstm.a -lm
///   hlstmc compile model.onnx --emit obj,header --cpu x86-64-v2 --sparse-strategy sparse-csr
///   hlstmc compile model.onnx --emit kir,clif,asm --print-after-all
///   hlstmc compile model.onnx --target ptx --sm 90 -o build/ --name hlstm   # hlstm.ptx, libhlstm.a, ...
///   cc -O2 main.c -Ibuild build/libhlstm.a -ldl -lm
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CompileArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// The target to generate code for.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub target: Target,
    /// The folder the artifacts are written to (created if needed).
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        default_value = "."
    )]
    pub out: PathBuf,
    /// The library name: the prefix of every symbol (a C identifier). Default: the model file's
    /// stem, with characters that cannot be in a C identifier replaced by `_`.
    #[arg(long)]
    pub name: Option<String>,
    /// What to write.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "obj,so,a,header"
    )]
    pub emit: Vec<Emit>,
    /// The CPU to generate code for (the default runs on any machine since about 2015).
    #[arg(long, value_enum, default_value = "x86-64-v3")]
    pub cpu: Cpu,
    /// Generate every constant weight this way instead of choosing per matrix.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub sparse_strategy: Option<SparseStrategy>,
    /// Fix an input's shape, for a model whose export left dims open (a batch `N`, a sequence
    /// length): NAME=D0,D1,... (repeatable). The sequence length given is the longest the
    /// library takes; the batch is the library's.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    pub shapes: Vec<String>,
    /// Take any batch from 1 to B per call. The model's batch dim must be open (a
    /// named dim, as `dynamic_axes` exports leave it): the library is compiled for B and runs a
    /// smaller batch zero-padded to it, once a check shows the batch elements independent.
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_batch: Option<u64>,
    /// Threads a call runs on (x86_64): each step's work split across a pool the context starts
    /// (a C runtime compiled with `cc` and linked into NAME.o; link programs with -pthread).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// With --target ptx: the GPU architecture (sm_N): 80, 86, 89 or 90.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(80..=90))]
    pub sm: u32,
    #[command(flatten)]
    pub opt: super::optimize::OptArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Target {
    /// x86-64 machine code (Cranelift).
    #[value(name = "x86_64")]
    X86_64,
    /// NVIDIA PTX: NAME.ptx (one persistent kernel), NAME.launch.json and a host library over
    /// the CUDA driver (docs/ptx.md).
    Ptx,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Emit {
    /// NAME.o: a position-independent ELF object.
    Obj,
    /// libNAME.so: a shared library (needs `cc`).
    So,
    /// libNAME.a: a static library (needs `ar`).
    A,
    /// NAME.h: the C header.
    Header,
    /// NAME.clif: the Cranelift IR of the program function.
    Clif,
    /// NAME.s: its machine instructions after register allocation (Cranelift's listing).
    Asm,
    /// NAME.kir: the kernel IR it was generated from.
    Kir,
    /// NAME.ptx and NAME.launch.json (--target ptx; written with every --emit list).
    Ptx,
    /// NAME_host.c: the C source of the host library (--target ptx).
    C,
}

/// `$VAR` or `default`, checked to run.
fn tool(var: &str, default: &str, why: &str) -> Result<String> {
    let t = std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string());
    match Command::new(&t).arg("--version").output() {
        Ok(_) => Ok(t),
        Err(e) => bail!(
            "cannot run `{t}` ({e}): it is needed for {why}; install it, set ${var}, or leave it out of --emit"
        ),
    }
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The model's batch size: the batch axis of its first recurrence's per-step input ([T, B, ...]
/// in the graph IR, whatever the ONNX layout), or 1.
fn model_batch(g: &hlstm_ir::Graph) -> usize {
    let order = g.topo_order().unwrap_or_default();
    for n in order {
        if let hlstm_ir::Op::Recurrence(r) = &g.node(n).op {
            let scanned = g.operands(n).get(r.num_carried).copied().flatten();
            if let Some(v) = scanned
                && let Some(d) = g.value_type(v).concrete()
                && d.len() >= 2
            {
                return d[1];
            }
        }
    }
    1
}

/// Per input or output: its batch axis, if it has one.
type Axes = Vec<Option<usize>>;

/// The batch axis of each input and output of a model whose batch dim is open, for
/// `--max-batch`: the named dim at axis 1 of its first recurrence's sequence ([T, B, ...] in
/// the graph IR), wherever the inputs and outputs declare it.
fn batch_axes(g: &hlstm_ir::Graph) -> Result<(String, Axes, Axes)> {
    use hlstm_ir::Dim;
    let mut symbol = None;
    for n in g.topo_order().unwrap_or_default() {
        if let hlstm_ir::Op::Recurrence(r) = &g.node(n).op
            && let Some(v) = g.operands(n).get(r.num_carried).copied().flatten()
        {
            symbol = match g.value_type(v).shape.as_deref() {
                Some([_, Dim::Sym(s), ..]) => Some(s.clone()),
                Some([_, d, ..]) => bail!(
                    "--max-batch: the model's batch is fixed by its export ({}); the library \
                     takes only that batch (export it with a dynamic batch axis)",
                    match d {
                        Dim::Known(v) => format!("batch {v}"),
                        _ => "not inferred".to_string(),
                    }
                ),
                _ => None,
            };
            break;
        }
    }
    let symbol = symbol.ok_or_else(|| {
        anyhow!("--max-batch: no recurrence with a sequence [T, B, ...] gives the batch axis")
    })?;
    let axis = |name: &str, shape: Option<&[Dim]>| -> Result<Option<usize>> {
        let hits: Vec<usize> = shape
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d, Dim::Sym(s) if *s == symbol))
            .map(|(i, _)| i)
            .collect();
        match hits[..] {
            [] => Ok(None),
            [a] => Ok(Some(a)),
            _ => bail!("--max-batch: '{name}' has the batch dim '{symbol}' more than once"),
        }
    };
    let ins = g
        .inputs
        .iter()
        .map(|n| {
            let node = g.node(*n);
            axis(&node.name, node.results[0].ty.shape.as_deref())
        })
        .collect::<Result<_>>()?;
    let outs = g
        .outputs
        .iter()
        .map(|(name, v)| axis(name, g.value_type(*v).shape.as_deref()))
        .collect::<Result<_>>()?;
    Ok((symbol, ins, outs))
}

/// The model, with the `--shape` inputs fixed (an input left with open dims is an error that
/// says which flag fixes it), and the batch dim set to `max_batch` when given; returns also
/// the batch axes of the inputs and outputs in that case.
fn load_with_batch(
    model: &Path,
    shapes: &[String],
    max_batch: Option<usize>,
) -> Result<(hlstm_ir::Graph, Option<hlstm_ir::kernel::BatchAxes>)> {
    let mut fixed = Vec::new();
    for s in shapes {
        let (name, dims) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--shape expects NAME=D0,D1,..., got '{s}'"))?;
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow!("--shape {s}: the dims must be whole numbers"))?;
        fixed.push((name.to_string(), dims));
    }
    let mut axes = None;
    if let Some(b) = max_batch {
        let g0 = super::load_model(model)?;
        let (symbol, ins, outs) = batch_axes(&g0)?;
        for (n, a) in g0.inputs.iter().zip(&ins) {
            let node = g0.node(*n);
            let given = fixed.iter().find(|(name, _)| *name == node.name);
            match (given, a) {
                (Some((_, dims)), Some(a)) if dims.get(*a) != Some(&b) => bail!(
                    "--shape {}: dim {a} is the batch '{symbol}', given {:?}, but --max-batch is {b}",
                    node.name,
                    dims.get(*a)
                ),
                (Some(_), _) => {}
                (None, _) => {
                    let dims = node.results[0]
                        .ty
                        .shape
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|d| match d {
                            hlstm_ir::Dim::Known(v) => Ok(*v),
                            hlstm_ir::Dim::Sym(s) if *s == symbol => Ok(b),
                            d => Err(anyhow!(
                                "input '{}' has the open dim {d:?} besides the batch: give it \
                                 with --shape {}=D0,D1,...",
                                node.name,
                                node.name
                            )),
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    fixed.push((node.name.clone(), dims));
                }
            }
        }
        axes = Some(hlstm_ir::kernel::BatchAxes {
            max: b,
            inputs: ins,
            outputs: outs,
        });
    }
    let g = if fixed.is_empty() {
        super::load_model(model)?
    } else {
        hlstm_frontends::onnx::import_file_with_shapes(model, &fixed)
            .with_context(|| format!("{}", model.display()))?
    };
    for n in &g.inputs {
        let r = &g.nodes[*n].results[0];
        if r.ty.concrete().is_none() {
            bail!(
                "input '{}' has open dims ({}): give them with --shape {}=D0,D1,... (the longest \
                 sequence and the batch the library takes)",
                g.nodes[*n].name,
                r.ty,
                g.nodes[*n].name
            );
        }
    }
    Ok((g, axes))
}

/// Makes the artifacts in a temporary folder inside `out` (`make` gets the folder and returns
/// the names of the files to keep), then renames each into `out`: every file is whole or absent.
fn write_artifacts(
    out: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tmp = out.join(format!(".hlstmc-{name}-{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let files = match make(&tmp) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    for f in &files {
        let dst = out.join(f);
        if let Err(e) = std::fs::rename(tmp.join(f), &dst) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", dst.display()));
        }
        println!("wrote {}", dst.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The tools `--emit` needs: `cc` for `so` (and, with `obj_needs_cc`, for `obj`), `ar` for `a`.
fn emit_tools(emit: &[Emit], obj_needs_cc: bool) -> Result<(Option<String>, Option<String>)> {
    let want = |e: Emit| emit.contains(&e);
    let cc = if want(Emit::So) || (obj_needs_cc && (want(Emit::Obj) || want(Emit::A))) {
        Some(tool(
            "CC",
            "cc",
            "--emit obj, so and a (compiling and linking)",
        )?)
    } else {
        None
    };
    let ar = if want(Emit::A) {
        Some(tool("AR", "ar", "--emit a (archiving libNAME.a)")?)
    } else {
        None
    };
    Ok((cc, ar))
}

/// The header's tensor names and dims.
fn tensor_infos(names: &[String], dims: &[Vec<usize>]) -> Vec<TensorInfo> {
    dims.iter()
        .enumerate()
        .map(|(k, d)| TensorInfo {
            name: names.get(k).cloned().unwrap_or_else(|| "?".into()),
            dims: d.clone(),
        })
        .collect()
}

/// The model's inputs and outputs for the header, with the kernel's dims.
fn model_tensors(
    g: &hlstm_ir::Graph,
    input_dims: &[Vec<usize>],
    output_dims: &[Vec<usize>],
) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    let ins: Vec<String> = super::run::input_names(g)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let outs: Vec<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
    (
        tensor_infos(&ins, input_dims),
        tensor_infos(&outs, output_dims),
    )
}

/// `libNAME.so` (with `so_cc`) and `libNAME.a` (with `ar`) from `NAME.o` in `dir`; returns the
/// files made. `libs` are the shared library's dependencies beyond libm.
fn link(
    dir: &Path,
    name: &str,
    so_cc: Option<&str>,
    ar: Option<&str>,
    libs: &[&str],
) -> Result<Vec<String>> {
    let o = format!("{name}.o");
    let mut files = Vec::new();
    if let Some(cc) = so_cc {
        let so = format!("lib{name}.so");
        run_tool(
            Command::new(cc)
                .current_dir(dir)
                .args(["-shared", "-o", &so, &o, "-lm"])
                .args(libs),
        )?;
        files.push(so);
    }
    if let Some(ar) = ar {
        let lib = format!("lib{name}.a");
        run_tool(Command::new(ar).current_dir(dir).args(["rcs", &lib, &o]))?;
        files.push(lib);
    }
    Ok(files)
}

/// The summary line's sequence lengths: "1 to T steps" or "exactly T steps".
fn steps_text(dynamic: bool, max_steps: usize) -> String {
    if dynamic {
        format!("1 to {max_steps} steps")
    } else {
        format!("exactly {max_steps} steps")
    }
}

fn default_name(model: &Path) -> String {
    let stem = model.file_stem().unwrap_or_default().to_string_lossy();
    let mut s: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

pub fn main(a: CompileArgs) -> Result<ExitCode> {
    let name = a.name.clone().unwrap_or_else(|| default_name(&a.model));
    if !aot::is_c_identifier(&name) {
        bail!("--name {name:?} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)");
    }
    if a.target == Target::Ptx {
        return main_ptx(&a, &name);
    }
    if a.emit.contains(&Emit::Ptx) || a.emit.contains(&Emit::C) {
        bail!("--emit ptx and c are for --target ptx");
    }
    let want = |e: Emit| a.emit.contains(&e);
    let threads = a.threads as usize;
    // Check the tools first: no work is done if one is missing. With threads, the runtime is
    // C, so every library file needs cc.
    let (cc, ar) = emit_tools(&a.emit, threads > 1)?;
    let (mut g, axes) = load_with_batch(&a.model, &a.shapes, a.max_batch.map(|b| b as usize))?;
    super::optimize::optimize(&mut g, &a.opt)?;
    let mut p = super::opt::lower(&g, a.sparse_strategy)?;
    p.name = name.clone();
    if let Some(axes) = axes {
        hlstm_passes::lower::batch::dynamic_batch(&mut p, axes)
            .map_err(|e| anyhow!("--max-batch: {e}"))?;
    }
    let isa = match a.cpu {
        Cpu::Native => CpuIsa::Native,
        Cpu::X86_64V2 => CpuIsa::X86_64V2,
        Cpu::X86_64V3 => CpuIsa::X86_64V3,
    };
    let opts = CpuOptions {
        isa,
        ..CpuOptions::default()
    };
    let batch = model_batch(&g);
    let parts = if threads > 1 {
        hlstm_passes::lower::threads::split(&p, threads)
    } else {
        Vec::new()
    };
    let obj = aot::compile_object(&p, &parts, &opts, &name, batch, want(Emit::Asm))
        .map_err(|e| anyhow!("{e}"))?;
    let (inputs, outputs) = model_tensors(&g, &obj.input_dims, &obj.output_dims);
    let model = a.model.display().to_string();
    let header = aot::c_header(&name, &obj.info, &model, &inputs, &outputs);

    write_artifacts(&a.out, &name, |tmp| {
        let o = format!("{name}.o");
        if let (true, Some(cc)) = (threads > 1, cc.as_deref()) {
            // The runtime's object and Cranelift's, linked into one relocatable NAME.o (cc is
            // there whenever obj, so or a is asked for).
            let (code, rt_c, rt_o) = (
                format!("{name}_code.o"),
                format!("{name}_rt.c"),
                format!("{name}_rt.o"),
            );
            std::fs::write(tmp.join(&code), &obj.object)?;
            std::fs::write(
                tmp.join(&rt_c),
                hlstm_backends::cpu::runtime::c_source(&name, threads),
            )?;
            run_tool(Command::new(cc).current_dir(tmp).args([
                "-std=c11", "-O2", "-fPIC", "-pthread", "-c", &rt_c, "-o", &rt_o,
            ]))?;
            run_tool(Command::new(cc).current_dir(tmp).args([
                "-r",
                "-nostdlib",
                "-o",
                &o,
                &code,
                &rt_o,
            ]))?;
        } else {
            std::fs::write(tmp.join(&o), &obj.object)?;
        }
        let mut files = Vec::new();
        if want(Emit::Obj) {
            files.push(o.clone());
        }
        let so_cc = cc.as_deref().filter(|_| want(Emit::So));
        let libs: &[&str] = if threads > 1 { &["-pthread"] } else { &[] };
        files.extend(link(tmp, &name, so_cc, ar.as_deref(), libs)?);
        if want(Emit::Header) {
            let h = format!("{name}.h");
            std::fs::write(tmp.join(&h), &header)?;
            files.push(h);
        }
        let listings = [
            (Emit::Kir, "kir", hlstm_ir::kernel::print(&p)),
            (Emit::Clif, "clif", obj.clif.clone()),
            (Emit::Asm, "s", obj.asm.clone().unwrap_or_default()),
        ];
        for (e, ext, text) in listings {
            if want(e) {
                let f = format!("{name}.{ext}");
                std::fs::write(tmp.join(&f), text)?;
                files.push(f);
            }
        }
        Ok(files)
    })?;
    let info = &obj.info;
    let steps = steps_text(info.dynamic_steps, info.max_steps);
    eprintln!(
        "{name}: {} inputs, {} outputs, {steps}, batch {}, streaming {}, threads {threads}, context {} bytes, code {} bytes, rodata {} bytes, cpu {}{}",
        info.input_lens.len(),
        info.output_lens.len(),
        info.batch,
        if info.streamable { "yes" } else { "no" },
        obj.context_bytes,
        obj.code_len,
        obj.rodata_len,
        isa.name(),
        if obj.fma { " (fma)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `--target ptx`: NAME.ptx and NAME.launch.json, and the host library over the CUDA driver
/// (NAME_host.c compiled with `cc` into NAME.o, libNAME.so and libNAME.a) with its header
/// NAME.h; NAME.kir with `--emit kir`. Written as the x86_64 target's artifacts are.
fn main_ptx(a: &CompileArgs, name: &str) -> Result<ExitCode> {
    if a.emit.contains(&Emit::Clif) || a.emit.contains(&Emit::Asm) {
        bail!(
            "--emit clif and asm are for --target x86_64; --target ptx writes NAME.ptx and NAME.launch.json, the host library (obj, so, a, header, c) and kir"
        );
    }
    if a.threads > 1 {
        bail!("--threads is for --target x86_64 (the GPU kernel runs on many threads already)");
    }
    if !hlstm_backends::ptx::SM_TARGETS.contains(&a.sm) {
        bail!(
            "--sm {}: the PTX target supports {:?}",
            a.sm,
            hlstm_backends::ptx::SM_TARGETS
        );
    }
    let want = |e: Emit| a.emit.contains(&e);
    let (cc, ar) = emit_tools(&a.emit, true)?;
    let (mut g, axes) = load_with_batch(&a.model, &a.shapes, a.max_batch.map(|b| b as usize))?;
    super::optimize::optimize(&mut g, &a.opt)?;
    let mut p = super::opt::lower(&g, a.sparse_strategy)?;
    p.name = name.to_string();
    if let Some(axes) = axes {
        hlstm_passes::lower::batch::dynamic_batch(&mut p, axes)
            .map_err(|e| anyhow!("--max-batch: {e}"))?;
    }
    let staging = hlstm_backends::cuda::host::BatchStaging::of(&p);
    let opts = hlstm_backends::ptx::PtxOptions {
        sm: a.sm,
        ..Default::default()
    };
    let m =
        hlstm_backends::ptx::compile(&p, &opts).map_err(|e| anyhow!("cannot generate PTX: {e}"))?;
    let model = a.model.display().to_string();
    let batch = model_batch(&g);
    let host = hlstm_backends::cuda::host::c_source(&m, name, batch, staging.as_ref(), &model)
        .map_err(|e| anyhow!("cannot generate the host library: {e}"))?;
    let dims = |ids: &[hlstm_ir::kernel::BufId]| -> Vec<Vec<usize>> {
        ids.iter().map(|id| p.buffers[id.0].dims.clone()).collect()
    };
    let (inputs, outputs) = model_tensors(&g, &dims(&p.inputs), &dims(&p.outputs));
    let info = hlstm_backends::cuda::host::library_info(&m, batch, staging.as_ref())
        .map_err(|e| anyhow!("{e}"))?;
    let header = aot::c_header(name, &info, &model, &inputs, &outputs);

    write_artifacts(&a.out, name, |tmp| {
        let mut files = vec![format!("{name}.ptx"), format!("{name}.launch.json")];
        std::fs::write(tmp.join(&files[0]), &m.ptx)?;
        std::fs::write(tmp.join(&files[1]), m.launch.to_json())?;
        let c = format!("{name}_host.c");
        std::fs::write(tmp.join(&c), &host)?;
        if want(Emit::C) {
            files.push(c.clone());
        }
        if let Some(cc) = &cc {
            let o = format!("{name}.o");
            run_tool(
                Command::new(cc)
                    .current_dir(tmp)
                    .args(["-std=c11", "-O2", "-fPIC", "-c", &c, "-o", &o]),
            )?;
            if want(Emit::Obj) {
                files.push(o);
            }
            let so_cc = cc.as_str();
            files.extend(link(
                tmp,
                name,
                want(Emit::So).then_some(so_cc),
                ar.as_deref(),
                &["-ldl"],
            )?);
        }
        if want(Emit::Header) {
            let h = format!("{name}.h");
            std::fs::write(tmp.join(&h), &header)?;
            files.push(h);
        }
        if want(Emit::Kir) {
            let f = format!("{name}.kir");
            std::fs::write(tmp.join(&f), hlstm_ir::kernel::print(&p))?;
            files.push(f);
        }
        Ok(files)
    })?;
    let l = &m.launch;
    let steps = steps_text(l.dynamic_steps, l.max_steps);
    eprintln!(
        "{name}: sm_{}, grid {} x {} threads, {steps}, batch {batch}, shared memory {} bytes, weights {} bytes in shared memory and {} in global memory",
        l.sm, l.grid[0], l.block[0], l.shared_bytes, l.weights_shared_bytes, l.weights_global_bytes
    );
    Ok(ExitCode::SUCCESS)
}
