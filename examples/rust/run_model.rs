//! run_model.rs: a Rust program around a library made by `hlstmc compile` (the C ABI of
//! docs/c-abi.md), for any `--name`: the name is given when the program is built, through the
//! environment variable HLSTMC_NAME. It reads each input from a .npy file (float32, C order:
//! what numpy's `np.save` and `hlstmc run -o` write), runs the whole sequence (or, with
//! `--stream`, one step at a time) and prints every output, one line each.
//!
//! ```sh
//! hlstmc compile model.onnx -o build --name hlstm
//! HLSTMC_NAME=hlstm rustc --edition 2021 -O examples/rust/run_model.rs -L build -l static=hlstmc_hlstm -o run_model
//! ./run_model x.npy              # prints what `hlstmc run model.onnx -i X=x.npy` computes
//! ./run_model --stream x.npy     # the same, one step at a time
//! ```

use std::os::raw::{c_int, c_void};

/// Declares the library's functions under their C names, NAME_ + the function.
macro_rules! library {
    ($(fn $f:ident($($a:ident: $t:ty),*) $(-> $r:ty)?;)*) => {
        unsafe extern "C" {
            $(
                #[link_name = concat!(env!("HLSTMC_NAME", "build with HLSTMC_NAME=<the --name of hlstmc compile>"), "_", stringify!($f))]
                fn $f($($a: $t),*) $(-> $r)?;
            )*
        }
    };
}

library! {
    fn version() -> c_int;
    fn num_inputs() -> usize;
    fn num_outputs() -> usize;
    fn max_steps() -> usize;
    fn dynamic_steps() -> c_int;
    fn batch() -> usize;
    fn input_len(k: usize, steps: usize) -> usize;
    fn output_len(k: usize, steps: usize) -> usize;
    fn context_create(max_steps: usize, batch: usize) -> *mut c_void;
    fn context_free(ctx: *mut c_void) -> c_int;
    fn run(ctx: *mut c_void, steps: usize, batch: usize, inputs: *const *const f32, outputs: *const *mut f32) -> c_int;
    fn step(ctx: *mut c_void, inputs: *const *const f32, outputs: *const *mut f32) -> c_int;
}

/// The ABI version this program was written for.
const ABI_VERSION: c_int = 3;

/// A context, freed on drop.
struct Context(*mut c_void);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from context_create and is freed once. A nonzero code
        // (a context still in a call) cannot happen here: calls borrow the Context.
        let code = unsafe { context_free(self.0) };
        debug_assert_eq!(code, 0, "context_free returned {code}");
    }
}

/// The float32 values of a .npy file in C order.
fn read_npy(path: &str) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let bad = || format!("{path}: not a float32 .npy file in C order");
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let (len, at) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| bad())?) as usize, 12),
    };
    let header = std::str::from_utf8(bytes.get(at..at + len).ok_or_else(bad)?).map_err(|_| bad())?;
    if !header.contains("'<f4'") || header.contains("True") {
        return Err(bad());
    }
    Ok(bytes[at + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn main() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let stream = args.first().is_some_and(|a| a == "--stream");
    if stream {
        args.remove(0);
    }
    // SAFETY: the functions below take plain values or pointers to buffers of the lengths the
    // library reports, which this program allocates; the context outlives every call.
    unsafe {
        if version() != ABI_VERSION {
            return Err(format!("library ABI {} (expected {ABI_VERSION})", version()));
        }
        let (ni, no) = (num_inputs(), num_outputs());
        if args.len() != ni {
            return Err(format!("usage: run_model [--stream] INPUT.npy ... ({ni} inputs)"));
        }
        let inputs: Vec<Vec<f32>> = args.iter().map(|a| read_npy(a)).collect::<Result<_, _>>()?;
        // A library that takes 1 to max_steps steps runs as many as the first input holds.
        let mut steps = max_steps();
        if dynamic_steps() != 0 && input_len(0, 1) > 0 {
            steps = inputs[0].len() / input_len(0, 1);
        }
        for (k, v) in inputs.iter().enumerate() {
            if v.len() != input_len(k, steps) {
                return Err(format!("{}: {} floats; the model takes {}", args[k], v.len(), input_len(k, steps)));
            }
        }
        let batch = batch();
        let ctx = Context(context_create(steps, batch));
        if ctx.0.is_null() {
            return Err("cannot create a context".into());
        }
        let mut outputs: Vec<Vec<f32>> = (0..no).map(|k| vec![0.0; output_len(k, steps)]).collect();
        if !stream {
            let ins: Vec<*const f32> = inputs.iter().map(|v| v.as_ptr()).collect();
            let outs: Vec<*mut f32> = outputs.iter_mut().map(|v| v.as_mut_ptr()).collect();
            let rc = run(ctx.0, steps, batch, ins.as_ptr(), outs.as_ptr());
            if rc != 0 {
                return Err(format!("run returned {rc}"));
            }
        } else {
            for t in 0..steps {
                // Tensors laid out by step hold one step per call; the others are whole.
                let at = |whole: usize, per: usize| if per == whole { 0 } else { t * per };
                let ins: Vec<*const f32> = (0..ni)
                    .map(|k| inputs[k].as_ptr().add(at(input_len(k, steps), input_len(k, 1))))
                    .collect();
                let outs: Vec<*mut f32> = (0..no)
                    .map(|k| outputs[k].as_mut_ptr().add(at(output_len(k, steps), output_len(k, 1))))
                    .collect();
                let rc = step(ctx.0, ins.as_ptr(), outs.as_ptr());
                if rc != 0 {
                    return Err(format!("step returned {rc} at step {t}"));
                }
            }
        }
        for (k, out) in outputs.iter().enumerate() {
            let values: Vec<String> = out.iter().map(|v| format!("{v:e}")).collect();
            println!("output {k}: {}", values.join(" "));
        }
    }
    Ok(())
}
