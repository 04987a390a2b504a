//! A compiled JIT program as bytes, for a compiled-code cache (docs/cache.md): each function's
//! machine code with its relocations named by symbol, its read-only data, and what a call needs
//! to know (workspace size, inputs' and outputs' lengths, sequence length). Loading one defines
//! the same bytes in a fresh `JITModule` (`define_function_bytes`), which lays out the code
//! and data, applies the relocations and finalizes: no Cranelift compilation.
//!
//! Relocations are kept by name: a function or data object of the program (by its symbol), a
//! libcall (`fmaf`, `ceilf`, ... by Cranelift's name for it, resolved in this process when
//! loaded), or an offset in a function. Code with a relocation of another kind is not imaged
//! (the program still runs; it is only not cached).

use cranelift_codegen::Context;
use cranelift_codegen::binemit::Reloc;
use cranelift_codegen::ir::LibCall;
use cranelift_module::{DataId, FuncId, FuncOrDataId, Module, ModuleReloc, ModuleRelocTarget};
use std::str::FromStr;

/// Bumped whenever the layout of an image changes.
pub const IMAGE_FORMAT: u32 = 1;

/// What a relocation points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A function of the program, by symbol.
    Func(String),
    /// A data object of the program, by symbol.
    Data(String),
    /// A Cranelift libcall, by its name (`LibCall`'s `Display`).
    LibCall(String),
    /// An offset in a function of the program.
    FuncOffset(String, u32),
    /// An imported function outside the program, by symbol (the thread runtime's barrier).
    Import(String),
}

/// One relocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelocImage {
    pub offset: u32,
    pub kind: u8,
    pub target: Target,
    pub addend: i64,
}

/// One function: its symbol, code, relocations and read-only data (`<symbol>_rodata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncImage {
    pub name: String,
    pub alignment: u64,
    pub code: Vec<u8>,
    pub relocs: Vec<RelocImage>,
    pub rodata: Option<Vec<u8>>,
}

/// What a call needs to know about the program's buffers and sequence length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepsImage {
    pub max: usize,
    pub dynamic: bool,
    pub streamable: bool,
    pub reason: Option<String>,
    pub seq_lens: Option<usize>,
    /// Per input and output: (whole length, elements per step when laid out by step).
    pub inputs: Vec<(usize, Option<usize>)>,
    pub outputs: Vec<(usize, Option<usize>)>,
}

/// A whole compiled program: one function per thread part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeImage {
    pub funcs: Vec<FuncImage>,
    pub work_len: usize,
    pub fma: bool,
    pub code_len: usize,
    pub rodata_len: usize,
    pub steps: StepsImage,
}

// Relocation kinds an image may hold (x86-64 code of the JIT, not PIC), by a stable number.
const KINDS: [Reloc; 6] = [
    Reloc::Abs4,
    Reloc::Abs8,
    Reloc::X86PCRel4,
    Reloc::X86CallPCRel4,
    Reloc::X86CallPLTRel4,
    Reloc::X86GOTPCRel4,
];

fn kind_code(k: Reloc) -> Option<u8> {
    KINDS.iter().position(|&x| x == k).map(|i| i as u8)
}

/// The relocations of the function just defined in `ctx` (as `func_id` of `module`), by name;
/// an error names a relocation an image cannot hold.
pub(crate) fn capture<M: Module>(
    module: &M,
    ctx: &Context,
    func_id: FuncId,
    name: &str,
    rodata: Option<Vec<u8>>,
) -> Result<FuncImage, String> {
    let code = ctx.compiled_code().ok_or("no compiled code to image")?;
    let decls = module.declarations();
    let mut relocs = Vec::new();
    for r in code.buffer.relocs() {
        let m = ModuleReloc::from_mach_reloc(r, &ctx.func, func_id);
        let kind = kind_code(m.kind).ok_or_else(|| format!("relocation kind {}", m.kind))?;
        let target = match m.name {
            ModuleRelocTarget::User { namespace, index } => match namespace {
                0 => {
                    let id = FuncId::from_u32(index);
                    let d = decls.get_function_decl(id);
                    let n = d.linkage_name(id).into_owned();
                    if d.linkage == cranelift_module::Linkage::Import {
                        Target::Import(n)
                    } else {
                        Target::Func(n)
                    }
                }
                1 => {
                    let id = DataId::from_u32(index);
                    Target::Data(decls.get_data_decl(id).linkage_name(id).into_owned())
                }
                n => return Err(format!("a symbol in namespace {n}")),
            },
            ModuleRelocTarget::LibCall(lc) => Target::LibCall(lc.to_string()),
            ModuleRelocTarget::FunctionOffset(id, off) => Target::FuncOffset(
                decls.get_function_decl(id).linkage_name(id).into_owned(),
                off,
            ),
            ModuleRelocTarget::KnownSymbol(ks) => return Err(format!("known symbol {ks}")),
        };
        relocs.push(RelocImage {
            offset: m.offset,
            kind,
            target,
            addend: m.addend,
        });
    }
    Ok(FuncImage {
        name: name.to_string(),
        alignment: code.buffer.alignment as u64,
        code: code.code_buffer().to_vec(),
        relocs,
        rodata,
    })
}

/// The relocation as the module that loads the image takes it.
pub(crate) fn module_reloc<M: Module>(module: &M, r: &RelocImage) -> Result<ModuleReloc, String> {
    let kind = *KINDS
        .get(r.kind as usize)
        .ok_or_else(|| format!("unknown relocation kind {}", r.kind))?;
    let id = |n: &str| {
        module
            .declarations()
            .get_name(n)
            .ok_or_else(|| format!("the image refers to an undeclared symbol {n}"))
    };
    let name = match &r.target {
        Target::Func(n) | Target::Data(n) | Target::Import(n) => id(n)?.into(),
        Target::LibCall(n) => ModuleRelocTarget::LibCall(
            LibCall::from_str(n).map_err(|_| format!("unknown libcall {n}"))?,
        ),
        Target::FuncOffset(n, off) => match id(n)? {
            FuncOrDataId::Func(f) => ModuleRelocTarget::FunctionOffset(f, *off),
            FuncOrDataId::Data(_) => return Err(format!("{n} is data, not a function")),
        },
    };
    Ok(ModuleReloc {
        offset: r.offset,
        kind,
        name,
        addend: r.addend,
    })
}

// ---------------------------------------------------------------------------------------------
// Bytes. Little-endian; lengths as u64; strings as UTF-8 with a length.

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_u64(&mut self, v: Option<usize>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v as u64);
            }
            None => self.u8(0),
        }
    }
    fn lens(&mut self, v: &[(usize, Option<usize>)]) {
        self.u64(v.len() as u64);
        for (n, s) in v {
            self.u64(*n as u64);
            self.opt_u64(*s);
        }
    }
}

/// Reads what [`W`] wrote; every read is checked against the end.
pub(crate) struct R<'a> {
    b: &'a [u8],
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.b.len() {
            return Err("the image ends early".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "a length does not fit".to_string())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.usize()?;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
    fn opt_u64(&mut self) -> Result<Option<usize>, String> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(self.usize()?),
            _ => return Err("a bad flag".into()),
        })
    }
    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("a bad flag".into()),
        }
    }
    /// A count of items each at least `min` bytes long, checked against what is left.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.usize()?;
        if n.saturating_mul(min) > self.b.len() {
            return Err("a count larger than the image".into());
        }
        Ok(n)
    }
    fn lens(&mut self) -> Result<Vec<(usize, Option<usize>)>, String> {
        let n = self.count(9)?;
        (0..n)
            .map(|_| Ok((self.usize()?, self.opt_u64()?)))
            .collect()
    }
}

impl CodeImage {
    /// The image as bytes ([`CodeImage::from_bytes`] reads them back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.u64(IMAGE_FORMAT as u64);
        w.u64(self.work_len as u64);
        w.u8(self.fma as u8);
        w.u64(self.code_len as u64);
        w.u64(self.rodata_len as u64);
        let s = &self.steps;
        w.u64(s.max as u64);
        w.u8(s.dynamic as u8);
        w.u8(s.streamable as u8);
        match &s.reason {
            Some(r) => {
                w.u8(1);
                w.str(r);
            }
            None => w.u8(0),
        }
        w.opt_u64(s.seq_lens);
        w.lens(&s.inputs);
        w.lens(&s.outputs);
        w.u64(self.funcs.len() as u64);
        for f in &self.funcs {
            w.str(&f.name);
            w.u64(f.alignment);
            w.bytes(&f.code);
            match &f.rodata {
                Some(d) => {
                    w.u8(1);
                    w.bytes(d);
                }
                None => w.u8(0),
            }
            w.u64(f.relocs.len() as u64);
            for r in &f.relocs {
                w.u64(r.offset as u64);
                w.u8(r.kind);
                w.u64(r.addend as u64);
                match &r.target {
                    Target::Func(n) => {
                        w.u8(0);
                        w.str(n);
                    }
                    Target::Data(n) => {
                        w.u8(1);
                        w.str(n);
                    }
                    Target::LibCall(n) => {
                        w.u8(2);
                        w.str(n);
                    }
                    Target::FuncOffset(n, off) => {
                        w.u8(3);
                        w.str(n);
                        w.u64(*off as u64);
                    }
                    Target::Import(n) => {
                        w.u8(4);
                        w.str(n);
                    }
                }
            }
        }
        w.0
    }

    /// Reads [`CodeImage::to_bytes`]; an error says what is wrong (a truncated or damaged
    /// image, or one of another format).
    pub fn from_bytes(b: &[u8]) -> Result<CodeImage, String> {
        let mut r = R { b };
        let format = r.u64()?;
        if format != IMAGE_FORMAT as u64 {
            return Err(format!("image format {format}, expected {IMAGE_FORMAT}"));
        }
        let work_len = r.usize()?;
        let fma = r.bool()?;
        let code_len = r.usize()?;
        let rodata_len = r.usize()?;
        let max = r.usize()?;
        let dynamic = r.bool()?;
        let streamable = r.bool()?;
        let reason = if r.bool()? { Some(r.str()?) } else { None };
        let seq_lens = r.opt_u64()?;
        let inputs = r.lens()?;
        let outputs = r.lens()?;
        let nf = r.count(8)?;
        let mut funcs = Vec::with_capacity(nf);
        for _ in 0..nf {
            let name = r.str()?;
            let alignment = r.u64()?;
            let code = r.bytes()?.to_vec();
            let rodata = if r.bool()? {
                Some(r.bytes()?.to_vec())
            } else {
                None
            };
            let nr = r.count(17)?;
            let mut relocs = Vec::with_capacity(nr);
            for _ in 0..nr {
                let offset =
                    u32::try_from(r.u64()?).map_err(|_| "a relocation offset too large")?;
                let kind = r.u8()?;
                let addend = r.u64()? as i64;
                let target = match r.u8()? {
                    0 => Target::Func(r.str()?),
                    1 => Target::Data(r.str()?),
                    2 => Target::LibCall(r.str()?),
                    3 => {
                        let n = r.str()?;
                        let off = u32::try_from(r.u64()?).map_err(|_| "an offset too large")?;
                        Target::FuncOffset(n, off)
                    }
                    4 => Target::Import(r.str()?),
                    t => return Err(format!("unknown relocation target {t}")),
                };
                if offset as usize + 4 > code.len() {
                    return Err("a relocation outside its function".into());
                }
                relocs.push(RelocImage {
                    offset,
                    kind,
                    target,
                    addend,
                });
            }
            funcs.push(FuncImage {
                name,
                alignment,
                code,
                relocs,
                rodata,
            });
        }
        if !r.b.is_empty() {
            return Err("bytes after the image".into());
        }
        if funcs.is_empty() {
            return Err("an image without a function".into());
        }
        Ok(CodeImage {
            funcs,
            work_len,
            fma,
            code_len,
            rodata_len,
            steps: StepsImage {
                max,
                dynamic,
                streamable,
                reason,
                seq_lens,
                inputs,
                outputs,
            },
        })
    }
}
