//! PTX for NVIDIA GPUs (docs/ptx.md): one persistent kernel per program that runs the whole
//! sequence, time loop included, across several thread blocks, with a grid-wide barrier between
//! dependent statements.
//!
//! ```text
//! kernel IR ─legalize─▶ legal statements (canonical views, primitive ops, barriers, placement)
//!           ─print (table.rs: one template per primitive)─▶ .ptx text + launch description
//! ```
//!
//! ```ignore
//! let m = hlstm_backends::ptx::compile(&program, &PtxOptions::default())?;
//! std::fs::write("model.ptx", &m.ptx)?;
//! std::fs::write("model.launch.json", m.launch.to_json())?;
//! ```

mod emit;
pub mod legalize;
pub mod select;
pub mod table;

use hlstm_ir::kernel::Program;
use std::fmt::Write;

/// The GPU architectures this backend targets (`.target sm_N`).
pub const SM_TARGETS: [u32; 4] = [80, 86, 89, 90];

/// The PTX ISA version written in `.version`.
pub const PTX_VERSION: &str = "7.8";

#[derive(Clone, Debug)]
pub struct PtxOptions {
    /// `sm_N`: one of [`SM_TARGETS`].
    pub sm: u32,
    /// Threads per block (a multiple of 32; at least 128).
    pub block: u32,
    /// The most blocks of the grid (all must be resident at once for the grid barrier).
    pub max_blocks: u32,
}

impl Default for PtxOptions {
    fn default() -> Self {
        PtxOptions {
            sm: 80,
            block: 128,
            max_blocks: 16,
        }
    }
}

/// One kernel parameter, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// "u64" (a device pointer) or "u32".
    pub ty: &'static str,
    /// "input", "output", "workspace", "steps" or "resume".
    pub role: &'static str,
    /// For inputs and outputs: the program's index and the tensor's name.
    pub index: Option<usize>,
    pub tensor: Option<String>,
    /// Elements (f32) of a whole sequence, and per step for tensors laid out by step.
    pub elements: Option<usize>,
    pub elements_per_step: Option<usize>,
    /// For the workspace: its bytes (to be zeroed once when it is allocated).
    pub bytes: Option<usize>,
}

/// How to launch the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub kernel: String,
    pub sm: u32,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Static shared memory per block (constants copied at entry).
    pub shared_bytes: usize,
    pub params: Vec<Param>,
    pub max_steps: usize,
    pub dynamic_steps: bool,
    pub streamable: bool,
    /// The input giving the sequence lengths at run time, if any: the kernel's `steps` is
    /// their (equal) value, checked by the host (`hlstm_ir::kernel::steps_from_lengths`).
    pub seq_lens_input: Option<usize>,
    /// Bytes of constants kept in shared memory, and read from global memory.
    pub weights_shared_bytes: usize,
    pub weights_global_bytes: usize,
    /// Work items of the largest statement.
    pub max_work: usize,
}

/// A compiled module.
#[derive(Clone, Debug)]
pub struct PtxModule {
    pub ptx: String,
    pub launch: Launch,
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Launch {
    /// The launch description as JSON (NAME.launch.json).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"kernel\": {},", json_str(&self.kernel));
        let _ = writeln!(s, "  \"ptx_version\": \"{PTX_VERSION}\",");
        let _ = writeln!(s, "  \"target\": \"sm_{}\",", self.sm);
        let _ = writeln!(s, "  \"grid\": {:?},", self.grid);
        let _ = writeln!(s, "  \"block\": {:?},", self.block);
        let _ = writeln!(s, "  \"shared_bytes\": {},", self.shared_bytes);
        let _ = writeln!(s, "  \"dynamic_shared_bytes\": 0,");
        let _ = writeln!(s, "  \"cooperative\": true,");
        let _ = writeln!(s, "  \"max_steps\": {},", self.max_steps);
        let _ = writeln!(s, "  \"dynamic_steps\": {},", self.dynamic_steps);
        let _ = writeln!(s, "  \"streamable\": {},", self.streamable);
        if let Some(k) = self.seq_lens_input {
            let _ = writeln!(s, "  \"seq_lens_input\": {k},");
        }
        let _ = writeln!(
            s,
            "  \"weights\": {{\"shared_bytes\": {}, \"global_bytes\": {}}},",
            self.weights_shared_bytes, self.weights_global_bytes
        );
        let _ = writeln!(s, "  \"max_work_items\": {},", self.max_work);
        s.push_str("  \"params\": [\n");
        for (i, p) in self.params.iter().enumerate() {
            let mut f = vec![
                format!("\"name\": {}", json_str(&p.name)),
                format!("\"type\": \"{}\"", p.ty),
                format!("\"role\": \"{}\"", p.role),
            ];
            if let Some(k) = p.index {
                f.push(format!("\"index\": {k}"));
            }
            if let Some(t) = &p.tensor {
                f.push(format!("\"tensor\": {}", json_str(t)));
            }
            if let Some(n) = p.elements {
                f.push(format!("\"elements\": {n}"));
            }
            if let Some(n) = p.elements_per_step {
                f.push(format!("\"elements_per_step\": {n}"));
            }
            if let Some(n) = p.bytes {
                f.push(format!("\"bytes\": {n}"));
            }
            let _ = write!(s, "    {{{}}}", f.join(", "));
            s.push_str(if i + 1 < self.params.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn identifier(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !o.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        o.insert(0, '_');
    }
    o
}

/// Compiles a kernel-IR program to PTX text and its launch description.
pub fn compile(p: &Program, opts: &PtxOptions) -> Result<PtxModule, String> {
    if !SM_TARGETS.contains(&opts.sm) {
        return Err(format!(
            "sm_{} is not a target of this backend (one of {SM_TARGETS:?})",
            opts.sm
        ));
    }
    if opts.block < 128 || !opts.block.is_multiple_of(32) || opts.block > 1024 {
        return Err(format!(
            "{} threads per block: a multiple of 32 from 128 to 1024",
            opts.block
        ));
    }
    hlstm_ir::kernel::verify(p)?;
    let lp = legalize::legalize(p)?;
    let name = identifier(if p.name.is_empty() { "model" } else { &p.name });
    let blocks = lp
        .max_work
        .div_ceil(opts.block as usize)
        .clamp(1, opts.max_blocks.max(1) as usize) as u32;
    let ptx = emit::Printer::new(&lp, &name).module(opts.sm, opts.block);
    let mut params = Vec::new();
    let io = |role: &'static str, k: usize, (t, n, step): &(String, usize, Option<usize>)| Param {
        name: format!("{name}_{}{k}", if role == "input" { "in" } else { "out" }),
        ty: "u64",
        role,
        index: Some(k),
        tensor: Some(t.clone()),
        elements: Some(*n),
        elements_per_step: if lp.dynamic_steps { *step } else { None },
        bytes: None,
    };
    for (k, x) in lp.inputs.iter().enumerate() {
        params.push(io("input", k, x));
    }
    for (k, x) in lp.outputs.iter().enumerate() {
        params.push(io("output", k, x));
    }
    let scalar = |n: &str, role| Param {
        name: format!("{name}_{n}"),
        ty: "u32",
        role,
        index: None,
        tensor: None,
        elements: None,
        elements_per_step: None,
        bytes: None,
    };
    params.push(Param {
        bytes: Some(lp.work_words * 4),
        ty: "u64",
        ..scalar("work", "workspace")
    });
    params.push(scalar("steps", "steps"));
    params.push(scalar("resume", "resume"));
    let bytes = |shared: bool| -> usize {
        lp.arrays
            .iter()
            .filter(|a| a.shared.is_some() == shared)
            .map(|a| a.words.len() * 4)
            .sum()
    };
    let launch = Launch {
        kernel: name.clone(),
        sm: opts.sm,
        grid: [blocks, 1, 1],
        block: [opts.block, 1, 1],
        shared_bytes: lp.shared_bytes,
        params,
        max_steps: lp.max_steps,
        dynamic_steps: lp.dynamic_steps,
        streamable: lp.streamable,
        seq_lens_input: lp.seq_lens_input,
        weights_shared_bytes: bytes(true),
        weights_global_bytes: bytes(false),
        max_work: lp.max_work,
    };
    Ok(PtxModule { ptx, launch })
}

#[cfg(test)]
mod tests {
    use super::table::{ALL, fill, template};

    #[test]
    fn every_primitive_has_a_template_with_its_arguments() {
        for p in ALL {
            let (arity, t) = template(p);
            for i in 0..arity {
                assert!(t.contains(&format!("{{{i}}}")), "{p:?}: argument {i}");
            }
            assert!(t.contains("{d}"));
            let args: Vec<String> = (0..arity).map(|i| format!("%f{}", i + 1)).collect();
            let s = fill(p, "%f0", &args, "%p0");
            assert!(!s.contains('{'), "{s}");
        }
    }

    /// A program the kernel-IR verifier rejects is refused before legalization, with the
    /// verifier's message naming the statement.
    #[test]
    fn compile_rejects_a_bad_program_with_the_verifiers_message() {
        use hlstm_ir::kernel::{BufKind, LoopRun, Program, Stmt, View, verify};
        let mut p = Program::default();
        let x = p.add_buffer("x", BufKind::Input(0), &[4, 3]);
        let y = p.add_buffer("y", BufKind::Output(0), &[4, 3]);
        p.inputs = vec![x];
        p.outputs = vec![y];
        let row = |b, offset| View {
            offset,
            step_stride: 3,
            ..View::whole(b, &[3])
        };
        // Rows 1..=4 of a 4-row output: step 3 reaches past its end.
        p.body = vec![Stmt::Loop {
            trip: 4,
            reverse: false,
            run: LoopRun::Fixed,
            body: vec![Stmt::Copy {
                out: row(y, 3),
                x: row(x, 0),
            }],
        }];
        let want = verify(&p).expect_err("out of bounds");
        let got = super::compile(&p, &super::PtxOptions::default()).expect_err("refused");
        assert_eq!(got, want);
        assert!(
            got.starts_with("statement 1.1 (copy %1[+3 +3t; 3 : 1]"),
            "{got}"
        );
        assert!(
            got.contains("reaches elements 3..=14 of a storage of 12"),
            "{got}"
        );
        // The same program in bounds compiles.
        if let Stmt::Loop { body, .. } = &mut p.body[0] {
            body[0] = Stmt::Copy {
                out: row(y, 0),
                x: row(x, 0),
            };
        }
        assert!(super::compile(&p, &super::PtxOptions::default()).is_ok());
    }
}
