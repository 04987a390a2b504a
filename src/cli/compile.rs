//! `hlstmc compile`: ahead-of-time compilation to an object file, a shared and a static library
//! and a C header (docs/c-abi.md).

use super::engine::{Cpu, SparseStrategy};
use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use hlstmc::library::{Artifact, LibraryOptions, LibraryTarget, compile_library};
use std::path::PathBuf;
use std::process::ExitCode;

/// Compile a model ahead of time into a library with a C ABI.
///
/// Writes, by default, NAME.o (position-independent), the shared library libhlstmc_NAME.so.3
/// (SONAME libhlstmc_NAME.so.3, the C ABI's version; made with `cc -shared`) with the link
/// libhlstmc_NAME.so, the static libhlstmc_NAME.a (`ar rcs`), NAME.h, and for build systems
/// hlstmc_NAME.pc (pkg-config) and hlstmc_NAMEConfig.cmake (CMake's find_package) into DIR.
/// Programs link with -lhlstmc_NAME: no NAME can shadow a system library (-lm, -lc, ...).
/// Every exported symbol starts with NAME_;
/// docs/c-abi.md describes the ABI (contexts, whole sequences of a run-time length, one step at a
/// time). `--emit clif,asm,kir` also writes the lower levels: NAME.clif (Cranelift IR), NAME.s
/// (the machine instructions after register allocation) and NAME.kir (the kernel IR). The files
/// are written under temporary names and renamed once all of them are made, so each is whole or
/// absent. `cc` and `ar` (or $CC and $AR) are needed only for `so` and `a`, and `cc` for `obj`
/// too unless `--cpu x86-64-v2` (the AVX2 and AVX-512 kernels the code calls are C).
///
/// With --target ptx: NAME.ptx and NAME.launch.json, and the same library and header over the
/// CUDA driver (generated C compiled by `cc`: needed for obj, so and a; link with -ldl).
/// `--emit ptx` writes only the PTX and its launch description, `--emit c` adds NAME_host.c.
///
/// Examples:
///   hlstmc compile examples/hlstm_sp97/model.onnx -o out/build --name hlstm
///   cc -O2 -DMODEL=hlstm -Iout/build examples/c/starter.c out/build/libhlstmc_hlstm.a -lm -o out/starter
///   cc -O2 -DMODEL=hlstm examples/c/starter.c $(PKG_CONFIG_PATH=out/build pkg-config --cflags --libs hlstmc_hlstm) -o out/starter
///   hlstmc compile examples/hlstm_sp97/model.onnx -o out/build --emit obj,header --cpu x86-64-v2 --sparse-strategy sparse-csr
///   hlstmc compile examples/hlstm_sp97/model.onnx -o out/build --emit kir,clif,asm --print-after-all
///   hlstmc compile examples/hlstm_sp97/model.onnx --target ptx --sm 90 -o out/ptx --name hlstm   # hlstm.ptx, libhlstmc_hlstm.a, ...
///   cc -O2 -DMODEL=hlstm -Iout/ptx examples/c/starter.c out/ptx/libhlstmc_hlstm.a -ldl -lm -o out/starter_gpu
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
        long = "output",
        visible_alias = "output-dir",
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
        default_value = "obj,so,a,header,pc,cmake"
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
    /// libhlstmc_NAME.so.3 (SONAME the same) and the link libhlstmc_NAME.so: a shared library
    /// (needs `cc`).
    So,
    /// libhlstmc_NAME.a: a static library (needs `ar`).
    A,
    /// NAME.h: the C header.
    Header,
    /// hlstmc_NAME.pc: pkg-config's description of the libraries (with so or a).
    Pc,
    /// hlstmc_NAMEConfig.cmake: a CMake package, targets hlstmc::NAME and hlstmc::NAME_static.
    Cmake,
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

impl From<Emit> for Artifact {
    fn from(e: Emit) -> Self {
        match e {
            Emit::Obj => Artifact::Obj,
            Emit::So => Artifact::So,
            Emit::A => Artifact::A,
            Emit::Header => Artifact::Header,
            Emit::Pc => Artifact::Pc,
            Emit::Cmake => Artifact::Cmake,
            Emit::Clif => Artifact::Clif,
            Emit::Asm => Artifact::Asm,
            Emit::Kir => Artifact::Kir,
            Emit::Ptx => Artifact::Ptx,
            Emit::C => Artifact::C,
        }
    }
}

/// `--shape NAME=D0,D1,...` arguments.
fn parse_shapes(shapes: &[String]) -> Result<Vec<(String, Vec<usize>)>> {
    shapes
        .iter()
        .map(|s| {
            let (name, dims) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--shape expects NAME=D0,D1,..., got '{s}'"))?;
            let dims: Vec<usize> = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow!("--shape {s}: the dims must be whole numbers"))?;
            Ok((name.to_string(), dims))
        })
        .collect()
}

pub fn main(a: CompileArgs) -> Result<ExitCode> {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| hlstmc::library::default_name(&a.model));
    let opt = a.opt.options()?;
    let mut lib = LibraryOptions::new(
        &name,
        match a.target {
            Target::X86_64 => LibraryTarget::X86_64,
            Target::Ptx => LibraryTarget::Ptx,
        },
    );
    lib.emit = a.emit.iter().map(|&e| e.into()).collect();
    lib.cpu = a.cpu.into();
    lib.threads = a.threads as usize;
    lib.sm = a.sm;
    lib.strategy = a.sparse_strategy.map(Into::into);
    lib.shapes = parse_shapes(&a.shapes)?;
    lib.max_batch = a.max_batch.map(|b| b as usize);
    lib.source = a.model.display().to_string();
    // Options the library checks before reading the file are checked on a model read after
    // them; a bad --name or --emit still fails before the model is optimized.
    let t0 = std::time::Instant::now();
    let (model, mut phases) = hlstmc::ir::timing::record(|| super::load_model(&a.model));
    let model = model?;
    let import = t0.elapsed();
    // Ctrl-C mid-compile removes the temporary folder at once (a large model's is 100+ MB);
    // the lock keeps it from landing between two renames, so the library is all old or all new.
    let (tmp, out) = (hlstmc::library::temp_folder(&a.out, &name), a.out.clone());
    super::interrupt::exit_after(move || {
        let _commit = hlstmc::library::commit_lock()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if hlstmc::library::remove_temp_folder(&tmp) {
            eprintln!(
                "error: interrupted; nothing was written to {}",
                out.display()
            );
        } else {
            eprintln!("error: interrupted");
        }
    })?;
    let t0 = std::time::Instant::now();
    let (written, more) = hlstmc::ir::timing::record(|| compile_library(model, &opt, &lib, &a.out));
    let rest = t0.elapsed();
    phases.extend(more);
    if written.is_err() {
        super::interrupt::yield_to_cleanup();
    }
    let written = written.map_err(|e| match e {
        hlstmc::Error::Shape(_) => anyhow::Error::from(e).context(a.model.display().to_string()),
        e => e.into(),
    })?;
    for f in &written.files {
        outln!("wrote {}", f.display());
    }
    if a.opt.time_passes {
        // compile_library times its optimization as the phase "optimize"; the rest of it is
        // lowering, code generation, linking and writing the files.
        let optimize = phases
            .iter()
            .find(|(n, _)| n == "optimize")
            .map_or(std::time::Duration::ZERO, |(_, d)| *d);
        let stages = [
            ("import", import),
            ("optimize", optimize),
            ("compile", rest.saturating_sub(optimize)),
        ];
        eprint!("{}", super::setup_time::table(&stages, &phases));
    }
    eprintln!("{}", written.summary);
    Ok(ExitCode::SUCCESS)
}
