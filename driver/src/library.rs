//! Libraries on disk with a C ABI (docs/c-abi.md): x86-64 code from Cranelift, or PTX with a
//! host library over the CUDA driver. [`compile_library`] runs the whole pipeline for them:
//! input shapes fixed (and the batch opened to a maximum), optimized, lowered, generated, linked
//! with `cc`/`ar` where asked, and written so that each file is whole or absent.

use crate::{CpuIsa, Error, Model, OptimizeOptions, Result, Strategy};
use hlstm_backends::cpu::CpuOptions;
use hlstm_backends::cpu::aot::{self, TensorInfo as HeaderTensor};
use hlstm_ir::kernel::{BatchAxes, BufId, Program};
use hlstm_ir::{Dim, Graph, Op};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a library is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibraryTarget {
    /// x86-64 machine code.
    X86_64,
    /// NVIDIA PTX and a host library over the CUDA driver.
    Ptx,
}

impl LibraryTarget {
    /// Both targets.
    pub const ALL: [LibraryTarget; 2] = [LibraryTarget::X86_64, LibraryTarget::Ptx];

    /// The name `--target` takes.
    pub fn name(self) -> &'static str {
        match self {
            LibraryTarget::X86_64 => "x86_64",
            LibraryTarget::Ptx => "ptx",
        }
    }

    /// The target's kernel selection, for the lowering.
    pub fn selector(self) -> &'static dyn hlstm_ir::kernel::KernelSelector {
        match self {
            LibraryTarget::X86_64 => &hlstm_backends::cpu::select::SELECTOR,
            LibraryTarget::Ptx => &hlstm_backends::ptx::select::SELECTOR,
        }
    }
}

/// A file [`compile_library`] can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// NAME.o: a position-independent ELF object.
    Obj,
    /// libhlstmc_NAME.so.ABI, with the SONAME of that name, and the link libhlstmc_NAME.so: a
    /// shared library (needs `cc`).
    So,
    /// libhlstmc_NAME.a: a static library (needs `ar`).
    A,
    /// NAME.h: the C header.
    Header,
    /// hlstmc_NAME.pc: a pkg-config file for the folder's libraries (`Libs`, `Cflags`).
    Pc,
    /// hlstmc_NAMEConfig.cmake: a CMake package defining `hlstmc::NAME` (and
    /// `hlstmc::NAME_static`) for `find_package(hlstmc_NAME)`.
    Cmake,
    /// NAME.clif: the Cranelift IR (x86-64).
    Clif,
    /// NAME.s: the machine instructions after register allocation (x86-64).
    Asm,
    /// NAME.kir: the kernel IR.
    Kir,
    /// NAME.ptx and NAME.launch.json (PTX; written with every list).
    Ptx,
    /// NAME_host.c: the C source of the host library (PTX).
    C,
}

impl Artifact {
    /// Every artifact.
    pub const ALL: [Artifact; 11] = [
        Artifact::Obj,
        Artifact::So,
        Artifact::A,
        Artifact::Header,
        Artifact::Pc,
        Artifact::Cmake,
        Artifact::Clif,
        Artifact::Asm,
        Artifact::Kir,
        Artifact::Ptx,
        Artifact::C,
    ];

    /// The name `--emit` takes.
    pub fn name(self) -> &'static str {
        match self {
            Artifact::Obj => "obj",
            Artifact::So => "so",
            Artifact::A => "a",
            Artifact::Header => "header",
            Artifact::Pc => "pc",
            Artifact::Cmake => "cmake",
            Artifact::Clif => "clif",
            Artifact::Asm => "asm",
            Artifact::Kir => "kir",
            Artifact::Ptx => "ptx",
            Artifact::C => "c",
        }
    }
}

/// The library name a model file gives by default: its stem, with characters that cannot be
/// in a C identifier replaced by `_` (and `_` put first where it starts with a digit).
pub fn default_name(model: &Path) -> String {
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

/// How [`compile_library`] builds a library.
#[derive(Clone, Debug)]
pub struct LibraryOptions {
    /// The prefix of every symbol: a C identifier.
    pub name: String,
    /// The target.
    pub target: LibraryTarget,
    /// The files to write.
    pub emit: Vec<Artifact>,
    /// The CPU the x86-64 code is for.
    pub cpu: CpuIsa,
    /// Threads a call runs on (x86-64; a C runtime linked into NAME.o).
    pub threads: usize,
    /// The GPU architecture `sm_N` (PTX).
    pub sm: u32,
    /// Generate every constant weight with this kernel instead of the target's choice.
    pub strategy: Option<Strategy>,
    /// Input shapes to fix, by name (every dim).
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Take any batch from 1 to this per call (the model's batch dim must be open).
    pub max_batch: Option<usize>,
    /// Where the model came from, for the header's comment.
    pub source: String,
}

impl LibraryOptions {
    /// The files `hlstmc compile` writes by default.
    pub const DEFAULT_EMIT: [Artifact; 6] = [
        Artifact::Obj,
        Artifact::So,
        Artifact::A,
        Artifact::Header,
        Artifact::Pc,
        Artifact::Cmake,
    ];

    /// The defaults of `hlstmc compile`: x86-64-v3, one thread, `obj,so,a,header,pc,cmake`.
    pub fn new(name: &str, target: LibraryTarget) -> Self {
        LibraryOptions {
            name: name.to_string(),
            target,
            emit: Self::DEFAULT_EMIT.to_vec(),
            cpu: CpuIsa::X86_64V3,
            threads: 1,
            sm: 80,
            strategy: None,
            shapes: Vec::new(),
            max_batch: None,
            source: String::new(),
        }
    }
}

/// What [`compile_library`] wrote.
#[derive(Clone, Debug)]
pub struct Library {
    /// The files, in the output folder.
    pub files: Vec<PathBuf>,
    /// One line: inputs, outputs, steps, batch, sizes.
    pub summary: String,
}

/// Builds `model` into a library in `out` (created if needed): fixes its input shapes
/// ([`LibraryOptions::shapes`], and the batch to [`LibraryOptions::max_batch`]) inside the IR,
/// optimizes with `opt`, lowers, generates code and links. The files are made in a temporary
/// folder and renamed into `out` once all of them are: each is whole or absent.
pub fn compile_library(
    model: Model,
    opt: &OptimizeOptions,
    lib: &LibraryOptions,
    out: &Path,
) -> Result<Library> {
    let name = &lib.name;
    if !aot::is_c_identifier(name) {
        return Err(Error::Options(format!(
            "--name '{name}' is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )));
    }
    let want = |e: Artifact| lib.emit.contains(&e);
    // A library for zero steps or a batch of zero cannot make a context: refused, not written.
    if let Some((input, _)) = lib.shapes.iter().find(|(_, d)| d.contains(&0)) {
        return Err(Error::Shape(format!(
            "--shape {input}: a dim of 0 makes a library that cannot run (no steps, or a batch of 0)"
        )));
    }
    if (want(Artifact::Pc) || want(Artifact::Cmake)) && !want(Artifact::So) && !want(Artifact::A) {
        return Err(Error::Options(
            "--emit pc and cmake describe the libraries: add so or a to --emit".into(),
        ));
    }
    match lib.target {
        LibraryTarget::Ptx => {
            if want(Artifact::Clif) || want(Artifact::Asm) {
                return Err(Error::Options(
                    "--emit clif and asm are for --target x86_64; --target ptx writes NAME.ptx and NAME.launch.json, the host library (obj, so, a, header, c) and kir".into(),
                ));
            }
            if lib.threads > 1 {
                return Err(Error::Options(
                    "--threads is for --target x86_64 (the GPU kernel runs on many threads already)"
                        .into(),
                ));
            }
            if !hlstm_backends::ptx::SM_TARGETS.contains(&lib.sm) {
                return Err(Error::Options(format!(
                    "--sm {}: the PTX target supports {:?}",
                    lib.sm,
                    hlstm_backends::ptx::SM_TARGETS
                )));
            }
        }
        LibraryTarget::X86_64 => {
            if want(Artifact::Ptx) || want(Artifact::C) {
                return Err(Error::Options(
                    "--emit ptx and c are for --target ptx".into(),
                ));
            }
        }
    }
    // The tools first: no work is done if one is missing. With threads, or for the GPU, the
    // runtime is C, and for a CPU with AVX2 the code may call the wide kernels, also C
    // (docs/kernels.md): so every library file needs cc.
    let wide = lib.target == LibraryTarget::X86_64
        && hlstm_backends::cpu::wide::WideIsa::for_cpu(lib.cpu).is_some();
    let needs_cc = lib.threads > 1 || lib.target == LibraryTarget::Ptx || wide;
    let (cc, ar) = emit_tools(&lib.emit, needs_cc)?;
    let (model, axes) = fix_shapes(model, &lib.shapes, lib.max_batch)?;
    let model = hlstm_ir::timing::phase("optimize", || model.optimize(opt))?;
    let g = model.graph();
    let mut p = hlstm_ir::timing::phase("compile/lower", || {
        model.lower(&hlstm_passes::lower::LowerOptions {
            strategy: lib.strategy,
            selector: Some(lib.target.selector()),
            ..Default::default()
        })
    })?;
    p.name = name.clone();
    if let Some(axes) = axes {
        hlstm_passes::lower::batch::dynamic_batch(&mut p, axes)
            .map_err(|e| Error::Shape(format!("--max-batch: {e}")))?;
    }
    let tools = Tools { cc, ar };
    match lib.target {
        LibraryTarget::X86_64 => x86_64(g, &p, lib, &tools, out),
        LibraryTarget::Ptx => ptx(g, &p, lib, &tools, out),
    }
}

/// `cc` and `ar` where the artifacts need them.
struct Tools {
    cc: Option<String>,
    ar: Option<String>,
}

fn x86_64(
    g: &Graph,
    p: &Program,
    lib: &LibraryOptions,
    tools: &Tools,
    out: &Path,
) -> Result<Library> {
    let name = &lib.name;
    let want = |e: Artifact| lib.emit.contains(&e);
    let threads = lib.threads;
    let opts = CpuOptions {
        isa: lib.cpu,
        ..CpuOptions::default()
    };
    let batch = model_batch(g);
    let parts = if threads > 1 {
        hlstm_passes::lower::threads::split(p, threads)
    } else {
        Vec::new()
    };
    let obj = hlstm_ir::timing::phase("compile/codegen", || {
        aot::compile_object(p, &parts, &opts, name, batch, want(Artifact::Asm))
    })
    .map_err(|msg| Error::Codegen {
        target: "x86_64",
        msg,
    })?;
    let (inputs, outputs) = header_tensors(g, &obj.input_dims, &obj.output_dims);
    let header = aot::c_header(name, &obj.info, &lib.source, &inputs, &outputs);
    let files = write_artifacts(out, name, |tmp| {
        let o = format!("{name}.o");
        // C parts the code calls: the thread runtime (several threads) and the wide-vector
        // kernels (a target with AVX2 or AVX-512). Each is compiled and linked with
        // Cranelift's object into one relocatable NAME.o (cc is there whenever obj, so or a
        // is asked for).
        let mut c_parts: Vec<(String, String, &[&str])> = Vec::new();
        if threads > 1 {
            c_parts.push((
                format!("{name}_rt"),
                hlstm_backends::cpu::runtime::c_source(name, threads),
                &["-std=c11", "-O2", "-fPIC", "-pthread"],
            ));
        }
        // The wide kernels come compiled (`wide::library_object`), renamed for this library.
        let wide = match obj.calls_wide {
            true => Some(
                hlstm_backends::cpu::wide::library_object(name).map_err(|msg| Error::Codegen {
                    target: "x86_64",
                    msg,
                })?,
            ),
            false => None,
        };
        let merge = !c_parts.is_empty() || wide.is_some();
        if let (true, Some(cc)) = (merge, tools.cc.as_deref()) {
            let code = format!("{name}_code.o");
            write(&tmp.join(&code), &obj.object)?;
            let mut objects = vec![code];
            if let Some(wide) = &wide {
                let wo = format!("{name}_wide.o");
                write(&tmp.join(&wo), wide)?;
                objects.push(wo);
            }
            for (stem, source, flags) in &c_parts {
                let (c, co) = (format!("{stem}.c"), format!("{stem}.o"));
                write(&tmp.join(&c), source.as_bytes())?;
                run_tool(
                    Command::new(cc)
                        .current_dir(tmp)
                        .args(*flags)
                        .args(["-c", &c, "-o", &co]),
                )?;
                objects.push(co);
            }
            run_tool(
                Command::new(cc)
                    .current_dir(tmp)
                    .args(["-r", "-nostdlib", "-o", &o])
                    .args(&objects),
            )?;
        } else {
            write(&tmp.join(&o), &obj.object)?;
        }
        let mut files = Vec::new();
        if want(Artifact::Obj) {
            files.push(o.clone());
        }
        let so_cc = tools.cc.as_deref().filter(|_| want(Artifact::So));
        let libs: &[&str] = if threads > 1 { &["-pthread"] } else { &[] };
        files.extend(link(tmp, name, so_cc, tools.ar.as_deref(), libs)?);
        let needs: Vec<&str> = ["-lm"].iter().chain(libs).copied().collect();
        files.extend(build_files(
            tmp,
            lib,
            so_cc.is_some(),
            tools.ar.is_some(),
            &needs,
        )?);
        if want(Artifact::Header) {
            let h = format!("{name}.h");
            write(&tmp.join(&h), header.as_bytes())?;
            files.push(h);
        }
        files.extend(write_kir(tmp, name, p, want(Artifact::Kir))?);
        let listings = [
            (Artifact::Clif, "clif", obj.clif.clone()),
            (Artifact::Asm, "s", obj.asm.clone().unwrap_or_default()),
        ];
        for (e, ext, text) in listings {
            if want(e) {
                let f = format!("{name}.{ext}");
                write(&tmp.join(&f), text.as_bytes())?;
                files.push(f);
            }
        }
        Ok(files)
    })?;
    let info = &obj.info;
    let steps = steps_text(info.dynamic_steps, info.max_steps);
    let summary = format!(
        "{name}: {} inputs, {} outputs, {steps}, batch {}, streaming {}, threads {threads}, context {} bytes, code {} bytes, rodata {} bytes, cpu {}{}",
        info.input_lens.len(),
        info.output_lens.len(),
        info.batch,
        if info.streamable { "yes" } else { "no" },
        obj.context_bytes,
        obj.code_len,
        obj.rodata_len,
        lib.cpu.name(),
        if obj.fma { " (fma)" } else { "" }
    );
    Ok(Library { files, summary })
}

fn ptx(g: &Graph, p: &Program, lib: &LibraryOptions, tools: &Tools, out: &Path) -> Result<Library> {
    let name = &lib.name;
    let want = |e: Artifact| lib.emit.contains(&e);
    let codegen = |msg: String| Error::Codegen { target: "PTX", msg };
    let staging = hlstm_backends::cuda::host::BatchStaging::of(p);
    let opts = hlstm_backends::ptx::PtxOptions {
        sm: lib.sm,
        ..Default::default()
    };
    let m = hlstm_backends::ptx::compile(p, &opts)
        .map_err(|e| codegen(format!("cannot generate PTX: {e}")))?;
    let batch = model_batch(g);
    let host = hlstm_backends::cuda::host::c_source(&m, name, batch, staging.as_ref(), &lib.source)
        .map_err(|e| codegen(format!("cannot generate the host library: {e}")))?;
    let dims = |ids: &[BufId]| -> Vec<Vec<usize>> {
        ids.iter().map(|id| p.buffers[id.0].dims.clone()).collect()
    };
    let (inputs, outputs) = header_tensors(g, &dims(&p.inputs), &dims(&p.outputs));
    let info =
        hlstm_backends::cuda::host::library_info(&m, batch, staging.as_ref()).map_err(codegen)?;
    let header = aot::c_header(name, &info, &lib.source, &inputs, &outputs);
    let files = write_artifacts(out, name, |tmp| {
        let mut files = vec![format!("{name}.ptx"), format!("{name}.launch.json")];
        write(&tmp.join(&files[0]), m.ptx.as_bytes())?;
        write(&tmp.join(&files[1]), m.launch.to_json().as_bytes())?;
        let c = format!("{name}_host.c");
        write(&tmp.join(&c), host.as_bytes())?;
        if want(Artifact::C) {
            files.push(c.clone());
        }
        if let Some(cc) = &tools.cc {
            let o = format!("{name}.o");
            run_tool(
                Command::new(cc)
                    .current_dir(tmp)
                    .args(["-std=c11", "-O2", "-fPIC", "-c", &c, "-o", &o]),
            )?;
            if want(Artifact::Obj) {
                files.push(o);
            }
            let so_cc = want(Artifact::So).then_some(cc.as_str());
            files.extend(link(tmp, name, so_cc, tools.ar.as_deref(), &["-ldl"])?);
            files.extend(build_files(
                tmp,
                lib,
                so_cc.is_some(),
                tools.ar.is_some(),
                &["-ldl", "-lm"],
            )?);
        }
        if want(Artifact::Header) {
            let h = format!("{name}.h");
            write(&tmp.join(&h), header.as_bytes())?;
            files.push(h);
        }
        files.extend(write_kir(tmp, name, p, want(Artifact::Kir))?);
        Ok(files)
    })?;
    let l = &m.launch;
    let steps = steps_text(l.dynamic_steps, l.max_steps);
    let summary = format!(
        "{name}: sm_{}, grid {} x {} threads, {steps}, batch {batch}, shared memory {} bytes, weights {} bytes in shared memory and {} in global memory",
        l.sm, l.grid[0], l.block[0], l.shared_bytes, l.weights_shared_bytes, l.weights_global_bytes
    );
    Ok(Library { files, summary })
}

/// NAME.kir and NAME.kir.weights (the constants printed by hash), when `want`; returns the
/// files written.
fn write_kir(dir: &Path, name: &str, p: &Program, want: bool) -> Result<Vec<String>> {
    if !want {
        return Ok(Vec::new());
    }
    let (text, store) = hlstm_ir::kernel::print_with_weights(p);
    let (kir, weights) = (format!("{name}.kir"), format!("{name}.kir.weights"));
    write(&dir.join(&kir), text.as_bytes())?;
    let path = dir.join(&weights);
    store.save(&path).map_err(|source| Error::Io {
        action: "write",
        path,
        source,
    })?;
    Ok(vec![kir, weights])
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// `$VAR` or `default`, checked to run.
fn tool(var: &str, default: &str, why: &str) -> Result<String> {
    let t = std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string());
    match Command::new(&t).arg("--version").output() {
        Ok(_) => Ok(t),
        Err(e) => Err(Error::Unsupported(format!(
            "cannot run `{t}` ({e}): it is needed for {why}; install it, set ${var}, or leave it out of --emit"
        ))),
    }
}

fn run_tool(cmd: &mut Command) -> Result<()> {
    hlstm_ir::timing::phase("compile/link (cc, ar)", || run_tool_untimed(cmd))
}

fn run_tool_untimed(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::Codegen {
        target: "link",
        msg: format!("cannot run {cmd:?}: {e}"),
    })?;
    if !out.status.success() {
        return Err(Error::Codegen {
            target: "link",
            msg: format!(
                "{cmd:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// The tools the artifacts need: `cc` for `so` (and, with `obj_needs_cc`: threads, the GPU's
/// host code, or a CPU with the wide kernels, for `obj` and `a`), `ar` for `a`.
fn emit_tools(emit: &[Artifact], obj_needs_cc: bool) -> Result<(Option<String>, Option<String>)> {
    let want = |e: Artifact| emit.contains(&e);
    let cc = if want(Artifact::So) || (obj_needs_cc && (want(Artifact::Obj) || want(Artifact::A))) {
        Some(tool(
            "CC",
            "cc",
            "--emit obj, so and a (compiling and linking)",
        )?)
    } else {
        None
    };
    let ar = if want(Artifact::A) {
        Some(tool("AR", "ar", "--emit a (archiving libhlstmc_NAME.a)")?)
    } else {
        None
    };
    Ok((cc, ar))
}

/// The library name programs link with (`-lhlstmc_NAME`): the files are `libhlstmc_NAME.so`
/// and `libhlstmc_NAME.a`, so that no model name (`m`, `c`, `pthread`, ...) can make a file that
/// shadows a system library in a link line; the symbols keep the prefix `NAME_`.
pub fn link_name(name: &str) -> String {
    format!("hlstmc_{name}")
}

/// The shared library's file and SONAME: `libhlstmc_NAME.so.ABI`, the C ABI's version
/// (`NAME_ABI_VERSION`), which changes whenever a program built against the old one would break.
pub fn shared_library_file(name: &str) -> String {
    format!("lib{}.so.{}", link_name(name), aot::ABI_VERSION)
}

/// The shared library (with `so_cc`: `libhlstmc_NAME.so.ABI` with that SONAME, and the link
/// `libhlstmc_NAME.so` that `-l` finds) and the static one (with `ar`: `libhlstmc_NAME.a`) from
/// `NAME.o` in `dir`; returns the files made. `libs` are the shared library's dependencies
/// beyond libm.
fn link(
    dir: &Path,
    name: &str,
    so_cc: Option<&str>,
    ar: Option<&str>,
    libs: &[&str],
) -> Result<Vec<String>> {
    let o = format!("{name}.o");
    let stem = link_name(name);
    let mut files = Vec::new();
    if let Some(cc) = so_cc {
        let so = shared_library_file(name);
        let soname = format!("-Wl,-soname,{so}");
        run_tool(
            Command::new(cc)
                .current_dir(dir)
                .args(["-shared", &soname, "-o", &so, &o, "-lm"])
                .args(libs),
        )?;
        let dev = format!("lib{stem}.so");
        std::os::unix::fs::symlink(&so, dir.join(&dev)).map_err(|source| Error::Io {
            action: "write",
            path: dir.join(&dev),
            source,
        })?;
        files.push(so);
        files.push(dev);
    }
    if let Some(ar) = ar {
        let lib = format!("lib{stem}.a");
        run_tool(Command::new(ar).current_dir(dir).args(["rcs", &lib, &o]))?;
        files.push(lib);
    }
    Ok(files)
}

/// `hlstmc_NAME.pc` and `hlstmc_NAMEConfig.cmake`, as asked, for the libraries just made; both
/// locate the folder they are in, so it can be moved or installed whole. `libs` are what a
/// program must link besides the library (libm always; `-pthread` with threads, `-ldl` for
/// the GPU's host library).
fn build_files(
    dir: &Path,
    lib: &LibraryOptions,
    have_so: bool,
    have_a: bool,
    libs: &[&str],
) -> Result<Vec<String>> {
    let name = &lib.name;
    let stem = link_name(name);
    let want = |e: Artifact| lib.emit.contains(&e);
    let mut files = Vec::new();
    let source = if lib.source.is_empty() {
        "a model"
    } else {
        &lib.source
    };
    if want(Artifact::Pc) {
        let pc = format!(
            "# Generated by hlstmc {version} from {source}.\n\
             # cc main.c $(PKG_CONFIG_PATH=<this folder> pkg-config --cflags --libs {stem})\n\
             prefix=${{pcfiledir}}\n\
             libdir=${{prefix}}\n\
             includedir=${{prefix}}\n\
             \n\
             Name: {stem}\n\
             Description: {name}, compiled by hlstmc (C ABI {abi}; header {name}.h)\n\
             Version: {version}\n\
             Cflags: -I${{includedir}}\n\
             Libs: -L${{libdir}} -l{stem} {libs}\n",
            version = env!("CARGO_PKG_VERSION"),
            abi = aot::ABI_VERSION,
            libs = libs.join(" "),
        );
        let f = format!("{stem}.pc");
        write(&dir.join(&f), pc.as_bytes())?;
        files.push(f);
    }
    if want(Artifact::Cmake) {
        let mut deps: Vec<&str> = Vec::new();
        let mut prelude = String::new();
        for l in libs {
            match *l {
                "-lm" => deps.push("m"),
                "-pthread" => {
                    prelude
                        .push_str("include(CMakeFindDependencyMacro)\nfind_dependency(Threads)\n");
                    deps.push("Threads::Threads");
                }
                "-ldl" => deps.push("${CMAKE_DL_LIBS}"),
                other => deps.push(other),
            }
        }
        let deps = deps.join(";");
        let mut targets = String::new();
        let mut add = |target: &str, kind: &str, file: &str, soname: Option<&str>| {
            targets.push_str(&format!(
                "if(NOT TARGET hlstmc::{target})\n  \
                 add_library(hlstmc::{target} {kind} IMPORTED)\n  \
                 set_target_properties(hlstmc::{target} PROPERTIES\n    \
                 IMPORTED_LOCATION \"${{_hlstmc_{name}_dir}}/{file}\"\n{soname}    \
                 INTERFACE_INCLUDE_DIRECTORIES \"${{_hlstmc_{name}_dir}}\"\n    \
                 INTERFACE_LINK_LIBRARIES \"{deps}\")\nendif()\n",
                soname = soname
                    .map(|s| format!("    IMPORTED_SONAME \"{s}\"\n"))
                    .unwrap_or_default(),
            ));
        };
        let so = shared_library_file(name);
        let a = format!("lib{stem}.a");
        // hlstmc::NAME is the shared library where there is one; hlstmc::NAME_static the
        // static one.
        if have_so {
            add(name, "SHARED", &so, Some(&so));
        }
        if have_a {
            add(&format!("{name}_static"), "STATIC", &a, None);
            if !have_so {
                add(name, "STATIC", &a, None);
            }
        }
        let cmake = format!(
            "# Generated by hlstmc {version} from {source}.\n\
             # find_package({stem} CONFIG REQUIRED PATHS <this folder>)\n\
             # target_link_libraries(app PRIVATE hlstmc::{name})   # or hlstmc::{name}_static\n\
             get_filename_component(_hlstmc_{name}_dir \"${{CMAKE_CURRENT_LIST_DIR}}\" ABSOLUTE)\n\
             {prelude}{targets}set({stem}_VERSION {version})\n",
            version = env!("CARGO_PKG_VERSION"),
        );
        let f = format!("{stem}Config.cmake");
        write(&dir.join(&f), cmake.as_bytes())?;
        files.push(f);
    }
    Ok(files)
}

/// Makes the artifacts in a temporary folder inside `out` (`make` gets the folder and returns
/// the names of the files to keep), then renames each into `out`: every file is whole or
/// absent. Returns the paths written.
fn write_artifacts(
    out: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<Vec<PathBuf>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action: "create",
            path,
            source,
        }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    remove_stale_partials(out, name);
    let tmp = temp_folder(out, name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let files = match make(&tmp) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // A folder where a file goes would fail its rename after others are in place: refused
    // first, so a library is never half replaced.
    if let Some(f) = files.iter().find(|f| out.join(f).is_dir()) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Io {
            action: "write",
            path: out.join(f),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a folder is in its place",
            ),
        });
    }
    let mut written = Vec::new();
    // An interrupt handler waits for this lock, so it never ends the process between two
    // renames (a poisoned lock still orders the two).
    let _commit = COMMIT.lock().unwrap_or_else(|e| e.into_inner());
    for f in &files {
        let dst = out.join(f);
        if let Err(source) = std::fs::rename(tmp.join(f), &dst) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::Io {
                action: "write",
                path: dst,
                source,
            });
        }
        written.push(dst);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(written)
}

/// The folder a compile of `name` into `out` writes its files into before they are renamed
/// into place (one per process: `.hlstmc-NAME-PID.partial`).
pub fn temp_folder(out: &Path, name: &str) -> PathBuf {
    out.join(format!(".hlstmc-{name}-{}.partial", std::process::id()))
}

/// Removes a compile's temporary folder while a tool it started (cc, ar) may still be writing
/// into it, as after Ctrl-C: removal fails while the tool adds a file between the listing and
/// the final rmdir, so it is retried (for up to two seconds); once the folder is gone the tool
/// cannot create anything in it. Whether the folder is gone.
pub fn remove_temp_folder(tmp: &Path) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let _ = std::fs::remove_dir_all(tmp);
        if !tmp.exists() {
            return true;
        }
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

static COMMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held while a library's files are renamed into place. A program that ends itself on Ctrl-C
/// takes it first (and never lets go), so that an interrupted compile leaves either all its
/// files or none.
pub fn commit_lock() -> &'static std::sync::Mutex<()> {
    &COMMIT
}

/// Removes the temporary folders that earlier compiles of `name` into `out` left when they
/// were killed (Ctrl-C): `.hlstmc-NAME-PID.partial` whose process is gone (Linux: no
/// `/proc/PID`). A folder of a compile still running is left alone.
fn remove_stale_partials(out: &Path, name: &str) {
    let prefix = format!(".hlstmc-{name}-");
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".partial"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists();
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The header's inputs and outputs: the model's names with the kernel's dims.
fn header_tensors(
    g: &Graph,
    input_dims: &[Vec<usize>],
    output_dims: &[Vec<usize>],
) -> (Vec<HeaderTensor>, Vec<HeaderTensor>) {
    // The ABI is f32 for every model: a float16, bfloat16 or float64 tensor of the model says
    // so beside its name (docs/precision.md).
    let note = |name: &str, t: hlstm_ir::StoredType| match t {
        hlstm_ir::StoredType::F32 => name.to_string(),
        t => format!("{name} ({t} in the model; float here, not rounded to {t})"),
    };
    let ins: Vec<String> = g
        .inputs
        .iter()
        .map(|n| note(&g.nodes[*n].name, g.stored.input(&g.nodes[*n].name)))
        .collect();
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|(n, _)| note(n, g.stored.output(n)))
        .collect();
    let infos = |names: &[String], dims: &[Vec<usize>]| -> Vec<HeaderTensor> {
        dims.iter()
            .enumerate()
            .map(|(k, d)| HeaderTensor {
                name: names.get(k).cloned().unwrap_or_else(|| "?".into()),
                dims: d.clone(),
            })
            .collect()
    };
    (infos(&ins, input_dims), infos(&outs, output_dims))
}

/// The summary line's sequence lengths: "1 to T steps" or "exactly T steps".
fn steps_text(dynamic: bool, max_steps: usize) -> String {
    if dynamic {
        format!("1 to {max_steps} steps")
    } else {
        format!("exactly {max_steps} steps")
    }
}

/// The model's batch size: the batch axis of its first recurrence's per-step input ([T, B, ...]
/// in the graph IR, whatever the ONNX layout), or 1.
fn model_batch(g: &Graph) -> usize {
    for n in g.topo_order().unwrap_or_default() {
        if let Op::Recurrence(r) = &g.node(n).op {
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
fn batch_axes(g: &Graph) -> Result<(String, Axes, Axes)> {
    let err = |m: String| Error::Shape(format!("--max-batch: {m}"));
    let mut symbol = None;
    for n in g.topo_order().unwrap_or_default() {
        if let Op::Recurrence(r) = &g.node(n).op
            && let Some(v) = g.operands(n).get(r.num_carried).copied().flatten()
        {
            symbol = match g.value_type(v).shape.as_deref() {
                Some([_, Dim::Sym(s), ..]) => Some(s.clone()),
                Some([_, d, ..]) => {
                    return Err(err(format!(
                        "the model's batch is fixed by its export ({}); the library takes only \
                         that batch (export it with a dynamic batch axis)",
                        match d {
                            Dim::Known(v) => format!("batch {v}"),
                            _ => "not inferred".to_string(),
                        }
                    )));
                }
                _ => None,
            };
            break;
        }
    }
    let symbol = symbol.ok_or_else(|| {
        err("no recurrence with a sequence [T, B, ...] gives the batch axis".into())
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
            _ => Err(err(format!(
                "'{name}' has the batch dim '{symbol}' more than once"
            ))),
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

/// The model with the given inputs' shapes fixed inside the IR (an input left with open dims
/// is an error that says which flag fixes it), and the batch dim set to `max_batch` when given;
/// returns also the batch axes of the inputs and outputs in that case.
fn fix_shapes(
    model: Model,
    shapes: &[(String, Vec<usize>)],
    max_batch: Option<usize>,
) -> Result<(Model, Option<BatchAxes>)> {
    let mut fixed = shapes.to_vec();
    let mut axes = None;
    if let Some(b) = max_batch {
        let g0 = model.graph();
        let (symbol, ins, outs) = batch_axes(g0)?;
        for (n, a) in g0.inputs.iter().zip(&ins) {
            let node = g0.node(*n);
            let given = fixed.iter().find(|(name, _)| *name == node.name);
            match (given, a) {
                (Some((_, dims)), Some(a)) if dims.get(*a) != Some(&b) => {
                    return Err(Error::Shape(format!(
                        "--shape {}: dim {a} is the batch '{symbol}', {}, but --max-batch is {b}",
                        node.name,
                        match dims.get(*a) {
                            Some(d) => format!("given as {d}"),
                            None => format!("which the {} dims given lack", dims.len()),
                        }
                    )));
                }
                (Some(_), _) => {}
                (None, _) => {
                    let dims = node.results[0]
                        .ty
                        .shape
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|d| match d {
                            Dim::Known(v) => Ok(*v),
                            Dim::Sym(s) if *s == symbol => Ok(b),
                            d => Err(Error::Shape(format!(
                                "input '{}' has the open dim {d} besides the batch: give it \
                                 with --shape {}=D0,D1,...",
                                node.name, node.name
                            ))),
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    fixed.push((node.name.clone(), dims));
                }
            }
        }
        axes = Some(BatchAxes {
            max: b,
            inputs: ins,
            outputs: outs,
        });
    }
    let model = if fixed.is_empty() {
        model
    } else {
        model.with_input_shapes(&fixed)?
    };
    let g = model.graph();
    for n in &g.inputs {
        let r = &g.nodes[*n].results[0];
        if r.ty.concrete().is_none() {
            return Err(Error::Shape(format!(
                "input '{}' has open dims ({}): give them with --shape {}=D0,D1,... (the longest \
                 sequence and the batch the library takes)",
                g.nodes[*n].name, r.ty, g.nodes[*n].name
            )));
        }
    }
    Ok((model, axes))
}
