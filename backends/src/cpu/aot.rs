//! Ahead-of-time compilation: a kernel [`Program`] -> a position-independent ELF object file
//! with a small C ABI, and the C header that declares it (docs/c-abi.md).
//!
//! Everything in the object is generated with Cranelift (no C compiler is needed for the `.o`):
//! the program function from [`define_program`] (exported as `NAME_kernel`), and the ABI
//! functions, whose results are constants of the program:
//!
//! ```c
//! int    NAME_version(void);              /* NAME_ABI_VERSION */
//! size_t NAME_num_inputs(void);
//! size_t NAME_num_outputs(void);
//! size_t NAME_input_len(size_t k);        /* f32 elements; 0 when k is out of range */
//! size_t NAME_output_len(size_t k);
//! size_t NAME_workspace_size(void);       /* bytes */
//! int    NAME_run(const float *const *inputs, float *const *outputs, void *workspace);
//! ```
//!
//! `NAME_run` checks its pointers (the two arrays, every entry, and the workspace when its size
//! is not 0) and returns [`ERR_NULL`] before touching anything, otherwise runs the program and
//! returns 0. There is no global mutable state and the call allocates nothing: the caller owns
//! the workspace, so one workspace per thread makes concurrent calls safe.
//!
//! The object is generated with `is_pic = true` (a non-PIC object linked into a shared library
//! reads garbage, see shared/notes/stack-facts.md).

use super::codegen::define_program;
use super::{CpuOptions, build_isa};
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, Signature, UserFuncName, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use hlstm_ir::kernel::Program;

/// The value `NAME_version()` returns; raised whenever the ABI changes.
pub const ABI_VERSION: i32 = 1;
/// `NAME_run` succeeded.
pub const OK: i32 = 0;
/// `NAME_run` was given a null pointer (an array, one of its entries, or the workspace).
pub const ERR_NULL: i32 = 1;

/// An object file compiled ahead of time.
pub struct AotObject {
    /// The ELF relocatable object (`NAME.o`).
    pub object: Vec<u8>,
    /// Element counts (f32) of the inputs and outputs, in order.
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
    /// Logical dims of the inputs and outputs.
    pub input_dims: Vec<Vec<usize>>,
    pub output_dims: Vec<Vec<usize>>,
    /// Workspace size in bytes.
    pub workspace_bytes: usize,
    /// Whether the code uses fused multiply-adds.
    pub fma: bool,
    /// Machine code size of the program function, in bytes.
    pub code_len: usize,
    /// Read-only data size, in bytes.
    pub rodata_len: usize,
}

/// Whether `name` can prefix C identifiers: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_c_identifier(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles `p` into an object file whose symbols all start with `NAME_`.
pub fn compile_object(p: &Program, opts: &CpuOptions, name: &str) -> Result<AotObject, String> {
    if !is_c_identifier(name) {
        return Err(format!(
            "the library name {name:?} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    let isa = build_isa(opts, true)?;
    let builder = ObjectBuilder::new(isa, name, cranelift_module::default_libcall_names())
        .map_err(|e| format!("cranelift-object: {e}"))?;
    let mut module = ObjectModule::new(builder);
    let c = define_program(&mut module, p, &format!("{name}_kernel"))?;

    let lens = |ids: &[hlstm_ir::kernel::BufId]| -> Vec<usize> {
        ids.iter().map(|id| p.buffers[id.0].len()).collect()
    };
    let dims = |ids: &[hlstm_ir::kernel::BufId]| -> Vec<Vec<usize>> {
        ids.iter().map(|id| p.buffers[id.0].dims.clone()).collect()
    };
    let input_lens = lens(&p.inputs);
    let output_lens = lens(&p.outputs);
    let workspace_bytes = c.work_len * 4;

    let mut g = Gen {
        module: &mut module,
        fbc: FunctionBuilderContext::new(),
    };
    g.constant(&format!("{name}_version"), I32, ABI_VERSION as i64)?;
    g.constant(&format!("{name}_num_inputs"), I64, input_lens.len() as i64)?;
    g.constant(
        &format!("{name}_num_outputs"),
        I64,
        output_lens.len() as i64,
    )?;
    g.constant(
        &format!("{name}_workspace_size"),
        I64,
        workspace_bytes as i64,
    )?;
    g.table(&format!("{name}_input_len"), &input_lens)?;
    g.table(&format!("{name}_output_len"), &output_lens)?;
    g.run(
        &format!("{name}_run"),
        c.func_id,
        input_lens.len(),
        output_lens.len(),
        workspace_bytes > 0,
        p.max_steps.unwrap_or(0),
    )?;

    let product = module.finish();
    let object = product
        .emit()
        .map_err(|e| format!("cannot write the object file: {e}"))?;
    Ok(AotObject {
        object,
        input_lens,
        output_lens,
        input_dims: dims(&p.inputs),
        output_dims: dims(&p.outputs),
        workspace_bytes,
        fma: c.fma,
        code_len: c.code_len,
        rodata_len: c.rodata_len,
    })
}

/// Generates the small ABI functions.
struct Gen<'m> {
    module: &'m mut ObjectModule,
    fbc: FunctionBuilderContext,
}

impl Gen<'_> {
    fn define(
        &mut self,
        name: &str,
        params: &[cranelift_codegen::ir::Type],
        ret: cranelift_codegen::ir::Type,
        body: &mut dyn FnMut(&mut FunctionBuilder, &mut ObjectModule, &[Value]),
    ) -> Result<FuncId, String> {
        let mut sig: Signature = self.module.make_signature();
        for t in params {
            sig.params.push(AbiParam::new(*t));
        }
        sig.returns.push(AbiParam::new(ret));
        let id = self
            .module
            .declare_function(name, Linkage::Export, &sig)
            .map_err(|e| e.to_string())?;
        let mut ctx: Context = self.module.make_context();
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fbc);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let ps = b.block_params(entry).to_vec();
            body(&mut b, self.module, &ps);
            b.seal_all_blocks();
            b.finalize(self.module.target_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("cranelift: {e:?}"))?;
        Ok(id)
    }

    /// `ty name(void) { return value; }`
    fn constant(
        &mut self,
        name: &str,
        ty: cranelift_codegen::ir::Type,
        value: i64,
    ) -> Result<(), String> {
        self.define(name, &[], ty, &mut |b, _, _| {
            let v = b.ins().iconst(ty, value);
            b.ins().return_(&[v]);
        })?;
        Ok(())
    }

    /// `size_t name(size_t k) { return k < n ? values[k] : 0; }` as a chain of selects.
    fn table(&mut self, name: &str, values: &[usize]) -> Result<(), String> {
        self.define(name, &[I64], I64, &mut |b, _, ps| {
            let k = ps[0];
            let mut r = b.ins().iconst(I64, 0);
            for (i, v) in values.iter().enumerate() {
                let is = b.ins().icmp_imm_u(IntCC::Equal, k, i as i64);
                let c = b.ins().iconst(I64, *v as i64);
                r = b.ins().select(is, c, r);
            }
            b.ins().return_(&[r]);
        })?;
        Ok(())
    }

    /// `int name(const float *const *in, float *const *out, void *work)`: checks every pointer,
    /// then calls the program function.
    fn run(
        &mut self,
        name: &str,
        kernel: FuncId,
        n_in: usize,
        n_out: usize,
        needs_work: bool,
        steps: usize,
    ) -> Result<(), String> {
        self.define(name, &[I64, I64, I64], I32, &mut |b, module, ps| {
            let err = b.create_block();
            let check = |b: &mut FunctionBuilder, v: Value| {
                let next = b.create_block();
                b.ins().brif(v, next, &[], err, &[]);
                b.switch_to_block(next);
            };
            let (ins, outs, work) = (ps[0], ps[1], ps[2]);
            check(b, ins);
            check(b, outs);
            if needs_work {
                check(b, work);
            }
            for (arr, n) in [(ins, n_in), (outs, n_out)] {
                for k in 0..n {
                    let v = b
                        .ins()
                        .load(I64, super::codegen::mem(), arr, (8 * k) as i32);
                    check(b, v);
                }
            }
            let f = module.declare_func_in_func(kernel, b.func);
            let steps = b.ins().iconst(I64, steps as i64);
            let resume = b.ins().iconst(I64, 0);
            b.ins().call(f, &[ins, outs, work, steps, resume]);
            let ok = b.ins().iconst(I32, OK as i64);
            b.ins().return_(&[ok]);
            b.switch_to_block(err);
            let e = b.ins().iconst(I32, ERR_NULL as i64);
            b.ins().return_(&[e]);
        })?;
        Ok(())
    }
}

/// One model input or output, for the header's comment.
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
}

/// The C header `NAME.h` for an object from [`compile_object`]. `inputs` and `outputs` name the
/// model's tensors in order (for the comment only).
pub fn c_header(
    name: &str,
    obj: &AotObject,
    model: &str,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
) -> String {
    let guard = format!("{}_H", name.to_ascii_uppercase());
    let mut s = String::new();
    let line = |s: &mut String, t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    line(
        &mut s,
        &format!("/* {name}.h: generated by hlstmc from {model}. Do not edit. */"),
    );
    line(&mut s, "/*");
    line(
        &mut s,
        " * All tensors are f32, row-major, with static shapes (element counts in brackets).",
    );
    line(&mut s, " * Inputs (in the order of the `inputs` array):");
    let list = |s: &mut String, ts: &[TensorInfo], lens: &[usize]| {
        for (k, t) in ts.iter().enumerate() {
            let d: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
            let n = lens.get(k).copied().unwrap_or(0);
            s.push_str(&format!(
                " *   {k}: {} [{}] ({n} floats)\n",
                sanitize_comment(&t.name),
                d.join(" x ")
            ));
        }
    };
    list(&mut s, inputs, &obj.input_lens);
    line(&mut s, " * Outputs (in the order of the `outputs` array):");
    list(&mut s, outputs, &obj.output_lens);
    line(
        &mut s,
        &format!(
            " * Workspace: {} bytes (64-byte alignment is best, 4 is required).",
            obj.workspace_bytes
        ),
    );
    line(&mut s, " * See docs/c-abi.md.");
    line(&mut s, " */");
    line(&mut s, &format!("#ifndef {guard}"));
    line(&mut s, &format!("#define {guard}"));
    line(&mut s, "");
    line(&mut s, "#include <stddef.h>");
    line(&mut s, "#include <stdint.h>");
    line(&mut s, "");
    line(&mut s, "#ifdef __cplusplus");
    line(&mut s, "extern \"C\" {");
    line(&mut s, "#endif");
    line(&mut s, "");
    line(
        &mut s,
        &format!("#define {name}_ABI_VERSION {ABI_VERSION} /* what {name}_version() returns */"),
    );
    line(
        &mut s,
        &format!("#define {name}_OK {OK} /* {name}_run succeeded */"),
    );
    line(
        &mut s,
        &format!("#define {name}_ERR_NULL {ERR_NULL} /* a null array, array entry or workspace */"),
    );
    line(&mut s, "");
    for (ret, f, args, doc) in [
        ("int", "version", "void", "The ABI version."),
        ("size_t", "num_inputs", "void", "The number of inputs."),
        ("size_t", "num_outputs", "void", "The number of outputs."),
        (
            "size_t",
            "input_len",
            "size_t k",
            "Input k's length in floats (0 if k is out of range).",
        ),
        (
            "size_t",
            "output_len",
            "size_t k",
            "Output k's length in floats (0 if k is out of range).",
        ),
        (
            "size_t",
            "workspace_size",
            "void",
            "The workspace size in bytes (may be 0).",
        ),
        (
            "int",
            "run",
            "const float *const *inputs, float *const *outputs, void *workspace",
            "Runs the model on a whole sequence. Returns NAME_OK, or NAME_ERR_NULL (nothing written).",
        ),
    ] {
        line(&mut s, &format!("/* {} */", doc.replace("NAME", name)));
        line(&mut s, &format!("{ret} {name}_{f}({args});"));
    }
    line(&mut s, "");
    line(&mut s, "#ifdef __cplusplus");
    line(&mut s, "}");
    line(&mut s, "#endif");
    line(&mut s, "");
    line(&mut s, &format!("#endif /* {guard} */"));
    s
}

/// Keeps a name from closing the header's comment.
fn sanitize_comment(s: &str) -> String {
    s.replace("*/", "* /").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_identifiers() {
        assert!(is_c_identifier("model_1"));
        assert!(is_c_identifier("_m"));
        assert!(!is_c_identifier("1m"));
        assert!(!is_c_identifier("a-b"));
        assert!(!is_c_identifier(""));
    }
}
