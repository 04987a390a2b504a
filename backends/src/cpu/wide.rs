//! Matrix products with the target's widest vectors, in C (`wide.c`), called from generated
//! code: Cranelift's vectors are 128 bits wide, and a matmul over many rows is bound by the
//! multiply-add rate, which AVX2 doubles and AVX-512 quadruples. See docs/kernels.md, "Wide
//! kernels". The JIT calls the copy compiled into this crate (`build.rs`, names `hlstm_*`); a
//! library compiles [`c_source`] with its own name and links it into its object.

use cranelift_codegen::isa::TargetIsa;

/// The wide kernels a target can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WideIsa {
    /// AVX-512F (and FMA): 16 lanes.
    Avx512,
    /// AVX2 and FMA: 8 lanes.
    Avx2,
}

impl WideIsa {
    /// The widest kernels `isa` has, if any (none below x86-64-v3).
    pub fn of(isa: &dyn TargetIsa) -> Option<WideIsa> {
        let flag = |n: &str| {
            isa.isa_flags()
                .iter()
                .any(|v| v.name == n && v.as_bool() == Some(true))
        };
        if !(flag("has_fma") && flag("has_avx")) {
            None
        } else if flag("has_avx512f") {
            Some(WideIsa::Avx512)
        } else if flag("has_avx2") {
            Some(WideIsa::Avx2)
        } else {
            None
        }
    }

    /// The widest kernels code generated for `cpu` can call (what a library then links in).
    pub fn for_cpu(cpu: super::CpuIsa) -> Option<WideIsa> {
        let opts = super::CpuOptions {
            isa: cpu,
            ..Default::default()
        };
        super::build_isa(&opts, true)
            .ok()
            .and_then(|isa| WideIsa::of(&*isa))
    }

    fn suffix(self) -> &'static str {
        match self {
            WideIsa::Avx512 => "avx512",
            WideIsa::Avx2 => "avx2",
        }
    }

    /// The dense kernel's symbol with `prefix` (`hlstm_` in the JIT, `NAME_` in a library):
    /// `void gemm(i64 m, i64 k, i64 n, const float *a, i64 lda, const float *w_packed,
    /// float *out, i64 ldo)`.
    pub fn gemm_symbol(self, prefix: &str) -> String {
        format!("{prefix}gemm_{}", self.suffix())
    }

    /// The dense kernel on a row-major weight (a run-time one): `void gemm_rm(i64 m, i64 k,
    /// i64 n, const float *a, i64 lda, const float *w, i64 ldw, float *out, i64 ldo)`.
    pub fn gemm_rm_symbol(self, prefix: &str) -> String {
        format!("{prefix}gemm_rm_{}", self.suffix())
    }

    /// The packing of a row-major weight for the dense kernel (any ISA): `void pack(i64 k,
    /// i64 n, const float *w, i64 ldw, float *dst)`, `dst` [tiles][k][16].
    pub fn pack_symbol(prefix: &str) -> String {
        format!("{prefix}pack")
    }

    /// The gathering of a masked run-time weight's values (any ISA): `void gather(const u8
    /// *rodata, const i64 *classes, i64 nclasses, const u8 *wv, u8 *dst, i64 first)`.
    pub fn gather_symbol(prefix: &str) -> String {
        format!("{prefix}gather")
    }

    /// The sparse kernel's symbol: `void spmm(i64 m, const u8 *at, const u8 *rodata,
    /// const i64 *classes, i64 nclasses, float *outt, i64 ldo, const u8 *wv,
    /// const u8 *wdata, i64 wfirst)`: `wv` the view of a masked run-time weight read in place
    /// (the classes' weights are byte offsets into it) or null, and then the weights at
    /// `wdata` (the read-only data, or a masked weight's gathered values) from byte
    /// `weights_off - wfirst`; `const i64 *epi` the epilogue of each column (null for none,
    /// `super::epilogue`).
    pub fn spmm_symbol(self, prefix: &str) -> String {
        format!("{prefix}spmm_{}", self.suffix())
    }
}

impl WideIsa {
    /// The activations' symbol: `void act(i64 kind, i64 n, const float *x, float *out)`,
    /// kind 0 sigmoid, 1 tanh, 2 relu.
    pub fn act_symbol(self, prefix: &str) -> String {
        format!("{prefix}act_{}", self.suffix())
    }

    /// The transpose's symbol: `void transpose(i64 r, i64 c, const float *src, i64 src_row,
    /// float *dst, i64 dst_row)` (strides in elements).
    pub fn transpose_symbol(self, prefix: &str) -> String {
        format!("{prefix}transpose_{}", self.suffix())
    }

    /// The binary operations' symbol: `void binary(i64 op, i64 rows, i64 cols, const float *a,
    /// i64 sa, const float *b, i64 sb, float *out, i64 so)`, op 0 add, 1 sub, 2 mul, 3 div.
    pub fn binary_symbol(self, prefix: &str) -> String {
        format!("{prefix}binary_{}", self.suffix())
    }
}

/// The kernels' C source for library `name` (a C identifier): every symbol `NAME_…`, hidden.
/// Libraries link [`library_object`], this source compiled when hlstmc was built.
pub fn c_source(name: &str) -> String {
    include_str!("wide.c").replace("NAME_", &format!("{name}_"))
}

/// The prefix of every symbol of [`LIBRARY_OBJECT`] that [`c_source`] names `NAME_…`.
const LIBRARY_PREFIX: &str = "hlstmc_wide_lib_";

/// `wide.c` compiled when hlstmc was built (build.rs): position-independent, at `-O3`, its
/// `NAME_` symbols named [`LIBRARY_PREFIX`]`…`.
static LIBRARY_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wide_lib.o"));

/// The kernels as an ELF object for library `name` (a C identifier): the object compiled when
/// hlstmc was built, each symbol renamed as [`c_source`] would name it. `hlstmc compile` links
/// it instead of compiling the source, which took about a second and was the peak of the
/// command's memory (BENCHMARKS.md, "Memory").
pub fn library_object(name: &str) -> Result<Vec<u8>, String> {
    let err = |e: object::build::Error| format!("the wide kernels' object: {e}");
    let mut elf = object::build::elf::Builder::read(LIBRARY_OBJECT).map_err(err)?;
    for sym in elf.symbols.iter_mut() {
        if let Some(rest) = sym.name.strip_prefix(LIBRARY_PREFIX.as_bytes()) {
            sym.name = [name.as_bytes(), b"_", rest].concat().into();
        }
    }
    let mut out = Vec::new();
    elf.write(&mut out).map_err(err)?;
    Ok(out)
}

unsafe extern "C" {
    fn hlstm_gemm_avx512();
    fn hlstm_gemm_avx2();
    fn hlstm_gemm_rm_avx512();
    fn hlstm_gemm_rm_avx2();
    fn hlstm_pack();
    fn hlstm_gather();
    fn hlstm_spmm_avx512();
    fn hlstm_spmm_avx2();
    fn hlstm_act_avx512();
    fn hlstm_act_avx2();
    fn hlstm_binary_avx512();
    fn hlstm_binary_avx2();
    fn hlstm_transpose_avx512();
    fn hlstm_transpose_avx2();
}

/// The JIT's symbols for the kernels compiled into this crate.
pub(crate) fn jit_symbols() -> [(&'static str, *const u8); 14] {
    [
        ("hlstm_gemm_avx512", hlstm_gemm_avx512 as *const u8),
        ("hlstm_gemm_avx2", hlstm_gemm_avx2 as *const u8),
        ("hlstm_gemm_rm_avx512", hlstm_gemm_rm_avx512 as *const u8),
        ("hlstm_gemm_rm_avx2", hlstm_gemm_rm_avx2 as *const u8),
        ("hlstm_pack", hlstm_pack as *const u8),
        ("hlstm_gather", hlstm_gather as *const u8),
        ("hlstm_spmm_avx512", hlstm_spmm_avx512 as *const u8),
        ("hlstm_spmm_avx2", hlstm_spmm_avx2 as *const u8),
        ("hlstm_act_avx512", hlstm_act_avx512 as *const u8),
        ("hlstm_act_avx2", hlstm_act_avx2 as *const u8),
        ("hlstm_binary_avx512", hlstm_binary_avx512 as *const u8),
        ("hlstm_binary_avx2", hlstm_binary_avx2 as *const u8),
        (
            "hlstm_transpose_avx512",
            hlstm_transpose_avx512 as *const u8,
        ),
        ("hlstm_transpose_avx2", hlstm_transpose_avx2 as *const u8),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSymbol};

    /// Every kernel a library calls is defined in its object under the library's name, hidden
    /// (two libraries linked into one program do not collide), and no placeholder name is left.
    #[test]
    fn the_library_object_names_every_kernel_for_its_library() {
        let bytes = library_object("model_7").unwrap();
        let obj = object::File::parse(bytes.as_slice()).unwrap();
        let defined: Vec<_> = obj.symbols().filter(|s| s.is_definition()).collect();
        assert!(
            obj.symbols().all(|s| !s
                .name()
                .unwrap()
                .contains(LIBRARY_PREFIX.trim_end_matches('_'))),
            "a placeholder name is left"
        );
        for isa in [WideIsa::Avx512, WideIsa::Avx2] {
            for want in [
                isa.gemm_symbol("model_7_"),
                isa.gemm_rm_symbol("model_7_"),
                WideIsa::pack_symbol("model_7_"),
                WideIsa::gather_symbol("model_7_"),
                isa.spmm_symbol("model_7_"),
                isa.act_symbol("model_7_"),
                isa.transpose_symbol("model_7_"),
                isa.binary_symbol("model_7_"),
            ] {
                let s = defined
                    .iter()
                    .find(|s| s.name() == Ok(want.as_str()))
                    .unwrap_or_else(|| panic!("{want} is not defined"));
                assert!(s.is_global(), "{want} is not global");
                let elf_hidden = match s.flags() {
                    object::SymbolFlags::Elf { st_other, .. } => {
                        st_other & 0x3 == object::elf::STV_HIDDEN
                    }
                    _ => false,
                };
                assert!(elf_hidden, "{want} is not hidden");
            }
        }
    }
}
