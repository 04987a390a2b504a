//! A runner for the PTX target over the CUDA driver API, loaded at run time (docs/ptx.md).
//!
//! The driver library (`libcuda.so.1`) is opened with `dlopen` through `cudarc` (feature
//! `dynamic-loading`, bindings of CUDA 12.8, the driver API only), so the binary builds and
//! starts where CUDA is absent. [`driver_present`] is checked before any driver call: without
//! the library every entry returns [`no_driver_message`] as an error and never panics.
//!
//! ```ignore
//! let gpu = hlstm_backends::cuda::Gpu::open(0)?;          // cuInit, the primary context
//! let m = hlstm_backends::ptx::compile(&program, &PtxOptions { sm: gpu.sm_target()?, ..Default::default() })?;
//! let mut prog = hlstm_backends::cuda::CudaProgram::load(gpu, &m)?;   // cuModuleLoadData, buffers
//! let outs = prog.run(&inputs, steps, false)?;             // copies in, cooperative launch, out
//! ```
//!
//! A [`CudaProgram`] is the PTX module loaded in the device's primary context with one device
//! buffer per kernel parameter of the launch description, allocated once for the longest
//! sequence (`max_steps`; the batch is fixed when the model is compiled), and the workspace
//! zeroed once. Each [`CudaProgram::run`] copies the inputs in, launches the persistent kernel
//! on the launch description's grid with `cuLaunchCooperativeKernel` (the grid barrier needs
//! every block resident; the occupancy is checked when the program is loaded), waits, and
//! copies the outputs out. The workspace is kept between calls, so `resume` streams a
//! sequence one call at a time.

pub mod host;

use crate::ptx::{Launch, PtxModule, SM_TARGETS};
use cudarc::driver::{result, sys};
use std::ffi::{CString, c_void};
use std::sync::Arc;

/// The driver library's name on Linux, as the messages give it.
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";

/// The error without a driver library.
pub fn no_driver_message() -> String {
    format!("no CUDA driver found ({DRIVER_LIBRARY}): --engine cuda needs an NVIDIA GPU and driver")
}

/// Whether the CUDA driver library can be opened (it is not kept open).
pub fn driver_present() -> bool {
    // SAFETY: only dlopen (and dlclose) of the candidate names; no symbol is called.
    unsafe { sys::is_culib_present() }
}

fn check_driver() -> Result<(), String> {
    if driver_present() {
        Ok(())
    } else {
        Err(no_driver_message())
    }
}

/// A driver error with its name and the call that returned it.
fn err(what: &str) -> impl Fn(result::DriverError) -> String + '_ {
    move |e| {
        let name = e
            .error_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        let text = e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("CUDA driver: {what}: {name} ({text})")
    }
}

/// One GPU: the device and its retained primary context.
pub struct Gpu {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
    pub multiprocessors: i32,
    pub cooperative_launch: bool,
}

// The context handle may be made current on any thread; every entry does so first.
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

impl Gpu {
    /// Opens device `ordinal`: checks the driver library, `cuInit`, retains the primary context.
    pub fn open(ordinal: usize) -> Result<Arc<Gpu>, String> {
        check_driver()?;
        result::init().map_err(err("cuInit"))?;
        let count = result::device::get_count().map_err(err("cuDeviceGetCount"))?;
        if ordinal >= count.max(0) as usize {
            return Err(format!(
                "no CUDA device {ordinal}: the driver reports {count} device(s)"
            ));
        }
        let dev = result::device::get(ordinal as i32).map_err(err("cuDeviceGet"))?;
        let attr = |a: sys::CUdevice_attribute, what: &'static str| {
            // SAFETY: `dev` came from cuDeviceGet.
            unsafe { result::device::get_attribute(dev, a) }.map_err(err(what))
        };
        use sys::CUdevice_attribute::*;
        let major = attr(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            "cuDeviceGetAttribute",
        )?;
        let minor = attr(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            "cuDeviceGetAttribute",
        )?;
        let sms = attr(
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            "cuDeviceGetAttribute",
        )?;
        let coop = attr(
            CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
            "cuDeviceGetAttribute",
        )?;
        let name = result::device::get_name(dev).unwrap_or_else(|_| "?".into());
        // SAFETY: `dev` came from cuDeviceGet; released in Drop.
        let ctx =
            unsafe { result::primary_ctx::retain(dev) }.map_err(err("cuDevicePrimaryCtxRetain"))?;
        let gpu = Gpu {
            dev,
            ctx,
            ordinal,
            name,
            capability: (major, minor),
            multiprocessors: sms,
            cooperative_launch: coop != 0,
        };
        gpu.bind()?;
        Ok(Arc::new(gpu))
    }

    /// Makes the context current on this thread.
    fn bind(&self) -> Result<(), String> {
        // SAFETY: the context is retained while `self` lives.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(err("cuCtxSetCurrent"))
    }

    /// The newest `.target sm_N` of this backend the device runs (PTX for sm_N loads on a
    /// device of capability N or newer).
    pub fn sm_target(&self) -> Result<u32, String> {
        sm_for_capability(self.capability)
    }
}

/// The newest of [`SM_TARGETS`] not newer than the capability.
pub fn sm_for_capability((major, minor): (i32, i32)) -> Result<u32, String> {
    let cc = (major.max(0) * 10 + minor.max(0)) as u32;
    SM_TARGETS
        .iter()
        .rev()
        .find(|&&sm| sm <= cc)
        .copied()
        .ok_or_else(|| {
            format!(
                "the GPU has compute capability {major}.{minor}; the PTX target needs 8.0 or newer"
            )
        })
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: retained in `open`.
        let _ = unsafe { result::primary_ctx::release(self.dev) };
    }
}

/// What each kernel parameter takes, from the launch description.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// Input `k` (its f32 elements for `max_steps`, and per step when the length is dynamic).
    Input {
        k: usize,
        elements: usize,
        per_step: Option<usize>,
    },
    Output {
        k: usize,
        elements: usize,
        per_step: Option<usize>,
    },
    Workspace {
        bytes: usize,
    },
    Steps,
    Resume,
}

/// The parameters of a launch description as slots, checked.
pub fn slots(l: &Launch) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    let (mut ni, mut no) = (0, 0);
    for p in &l.params {
        let s = match (p.role, p.ty) {
            ("input" | "output", "u64") => {
                let k = p
                    .index
                    .ok_or_else(|| format!("parameter {}: no index", p.name))?;
                let elements = p
                    .elements
                    .ok_or_else(|| format!("parameter {}: no elements", p.name))?;
                let per_step = p.elements_per_step;
                if let Some(e) = per_step
                    && e * l.max_steps != elements
                {
                    return Err(format!(
                        "parameter {}: {elements} elements is not {} steps of {e}",
                        p.name, l.max_steps
                    ));
                }
                if p.role == "input" {
                    if k != ni {
                        return Err(format!("parameter {}: input {k} out of order", p.name));
                    }
                    ni += 1;
                    Slot::Input {
                        k,
                        elements,
                        per_step,
                    }
                } else {
                    if k != no {
                        return Err(format!("parameter {}: output {k} out of order", p.name));
                    }
                    no += 1;
                    Slot::Output {
                        k,
                        elements,
                        per_step,
                    }
                }
            }
            ("workspace", "u64") => Slot::Workspace {
                bytes: p.bytes.unwrap_or(0),
            },
            ("steps", "u32") => Slot::Steps,
            ("resume", "u32") => Slot::Resume,
            (r, t) => return Err(format!("parameter {}: role {r} of type {t}", p.name)),
        };
        out.push(s);
    }
    Ok(out)
}

/// Elements of a tensor for a call of `steps` steps.
pub fn elements_for(elements: usize, per_step: Option<usize>, steps: usize) -> usize {
    per_step.map_or(elements, |e| e * steps)
}

/// Checks a call's sequence length and input lengths against the launch description.
pub fn check_call(
    l: &Launch,
    slots: &[Slot],
    inputs: &[&[f32]],
    steps: usize,
) -> Result<(), String> {
    if steps == 0 || steps > l.max_steps || (!l.dynamic_steps && steps != l.max_steps) {
        return Err(if l.dynamic_steps {
            format!("{steps} steps: the model takes 1 to {}", l.max_steps)
        } else {
            format!("{steps} steps: the model takes exactly {}", l.max_steps)
        });
    }
    let want: Vec<usize> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Input {
                elements, per_step, ..
            } => Some(elements_for(*elements, *per_step, steps)),
            _ => None,
        })
        .collect();
    if want.len() != inputs.len() {
        return Err(format!(
            "{} inputs given, the kernel takes {}",
            inputs.len(),
            want.len()
        ));
    }
    for (k, (w, x)) in want.iter().zip(inputs).enumerate() {
        if *w != x.len() {
            return Err(format!(
                "input {k}: {} elements, the kernel takes {w} for {steps} steps",
                x.len()
            ));
        }
    }
    Ok(())
}

/// A PTX module loaded on a GPU with its device buffers (a context of the model).
pub struct CudaProgram {
    launch: Launch,
    slots: Vec<Slot>,
    /// Per parameter: its device buffer (0 for the scalars).
    bufs: Vec<sys::CUdeviceptr>,
    module: sys::CUmodule,
    func: sys::CUfunction,
    gpu: Arc<Gpu>,
}

unsafe impl Send for CudaProgram {}

impl CudaProgram {
    /// Loads the PTX (`cuModuleLoadData`), checks that the grid can be co-resident for the
    /// cooperative launch, and allocates every buffer for `max_steps` (the workspace zeroed).
    pub fn load(gpu: Arc<Gpu>, m: &PtxModule) -> Result<CudaProgram, String> {
        gpu.bind()?;
        let l = &m.launch;
        let slots = slots(l)?;
        if !gpu.cooperative_launch {
            return Err(format!(
                "{} does not support cooperative launches, which the persistent kernel needs",
                gpu.name
            ));
        }
        let sm = gpu.sm_target()?;
        if l.sm > sm {
            return Err(format!(
                "the PTX targets sm_{}; {} runs sm_{sm} at most",
                l.sm, gpu.name
            ));
        }
        let src = CString::new(m.ptx.as_str()).map_err(|_| "the PTX holds a NUL byte")?;
        let mut prog = CudaProgram {
            launch: l.clone(),
            slots: Vec::new(),
            bufs: Vec::new(),
            module: std::ptr::null_mut(),
            func: std::ptr::null_mut(),
            gpu: gpu.clone(),
        };
        // SAFETY: a NUL-terminated PTX image; the module is unloaded in Drop.
        prog.module = unsafe { result::module::load_data(src.as_ptr() as *const c_void) }
            .map_err(err("cuModuleLoadData (the PTX did not load)"))?;
        let kname = CString::new(l.kernel.as_str()).map_err(|_| "kernel name holds a NUL")?;
        // SAFETY: the module is loaded.
        prog.func = unsafe { result::module::get_function(prog.module, kname) }
            .map_err(err("cuModuleGetFunction"))?;
        let threads = l.block[0] * l.block[1] * l.block[2];
        let blocks = l.grid[0] * l.grid[1] * l.grid[2];
        // SAFETY: the function exists.
        let per_sm = unsafe {
            result::occupancy::max_active_block_per_multiprocessor(prog.func, threads as i32, 0)
        }
        .map_err(err("cuOccupancyMaxActiveBlocksPerMultiprocessor"))?;
        let resident = per_sm.max(0) as u64 * gpu.multiprocessors.max(0) as u64;
        if (blocks as u64) > resident {
            return Err(format!(
                "the grid of {blocks} blocks of {threads} threads cannot be resident at once on {} \
                 ({per_sm} per multiprocessor x {} multiprocessors)",
                gpu.name, gpu.multiprocessors
            ));
        }
        for s in &slots {
            let bytes = match s {
                Slot::Input { elements, .. } | Slot::Output { elements, .. } => elements * 4,
                Slot::Workspace { bytes } => *bytes,
                Slot::Steps | Slot::Resume => {
                    prog.bufs.push(0);
                    continue;
                }
            };
            // SAFETY: the context is current; freed in Drop.
            let p = unsafe { result::malloc_sync(bytes.max(4)) }.map_err(err("cuMemAlloc"))?;
            prog.bufs.push(p);
            if let Slot::Workspace { bytes } = s {
                // SAFETY: `p` holds `bytes`.
                unsafe { result::memset_d8_sync(p, 0, *bytes) }.map_err(err("cuMemsetD8"))?;
            }
        }
        prog.slots = slots;
        Ok(prog)
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Output lengths (f32 elements) for a call of `steps` steps.
    pub fn output_lens(&self, steps: usize) -> Vec<usize> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Output {
                    elements, per_step, ..
                } => Some(elements_for(*elements, *per_step, steps)),
                _ => None,
            })
            .collect()
    }

    /// One call of `steps` steps (resuming the sequence where the last call left it when
    /// `resume`): copies the inputs in, launches, waits, returns the outputs.
    pub fn run(
        &mut self,
        inputs: &[&[f32]],
        steps: usize,
        resume: bool,
    ) -> Result<Vec<Vec<f32>>, String> {
        let mut outs: Vec<Vec<f32>> = self
            .output_lens(steps)
            .into_iter()
            .map(|n| vec![0.0; n])
            .collect();
        let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        self.run_into(inputs, &mut views, steps, resume)?;
        Ok(outs)
    }

    /// [`CudaProgram::run`] into caller buffers of [`CudaProgram::output_lens`] elements.
    pub fn run_into(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        steps: usize,
        resume: bool,
    ) -> Result<(), String> {
        check_call(&self.launch, &self.slots, inputs, steps)?;
        if resume && !self.launch.streamable {
            return Err("the model cannot run step by step (resume)".into());
        }
        let want = self.output_lens(steps);
        if outputs.len() != want.len() || outputs.iter().zip(&want).any(|(o, w)| o.len() != *w) {
            return Err(format!(
                "outputs of {:?} elements given, the kernel writes {want:?}",
                outputs.iter().map(|o| o.len()).collect::<Vec<_>>()
            ));
        }
        // The count of the time loops: the sequence length, or the one the lengths input gives.
        let count = match self.launch.seq_lens_input {
            Some(k) => hlstm_ir::kernel::steps_from_lengths(inputs[k], steps)?,
            None => steps,
        };
        self.gpu.bind()?;
        let mut steps32 = count as u32;
        let mut resume32 = resume as u32;
        let mut ptrs = self.bufs.clone();
        let mut args: Vec<*mut c_void> = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                Slot::Input { k, .. } => {
                    // SAFETY: the buffer holds max_steps worth, checked above to cover the input.
                    unsafe { result::memcpy_htod_sync(self.bufs[i], inputs[*k]) }
                        .map_err(err("cuMemcpyHtoD"))?;
                    args.push(&mut ptrs[i] as *mut sys::CUdeviceptr as *mut c_void);
                }
                Slot::Output { .. } | Slot::Workspace { .. } => {
                    args.push(&mut ptrs[i] as *mut sys::CUdeviceptr as *mut c_void)
                }
                Slot::Steps => args.push(&mut steps32 as *mut u32 as *mut c_void),
                Slot::Resume => args.push(&mut resume32 as *mut u32 as *mut c_void),
            }
        }
        let l = &self.launch;
        // SAFETY: the arguments match the kernel's parameters (from its launch description)
        // and outlive the launch, which is waited for before returning.
        unsafe {
            result::launch_cooperative_kernel(
                self.func,
                (l.grid[0], l.grid[1], l.grid[2]),
                (l.block[0], l.block[1], l.block[2]),
                0,
                std::ptr::null_mut(),
                &mut args,
            )
        }
        .map_err(err("cuLaunchCooperativeKernel"))?;
        result::ctx::synchronize().map_err(err("the kernel failed (cuCtxSynchronize)"))?;
        let mut o = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Output { .. } = s {
                // SAFETY: the buffer holds at least outputs[o].len() elements.
                unsafe { result::memcpy_dtoh_sync(&mut *outputs[o], self.bufs[i]) }
                    .map_err(err("cuMemcpyDtoH"))?;
                o += 1;
            }
        }
        Ok(())
    }
}

impl Drop for CudaProgram {
    fn drop(&mut self) {
        if self.gpu.bind().is_err() {
            return;
        }
        for &p in &self.bufs {
            if p != 0 {
                // SAFETY: allocated in `load`, freed once.
                let _ = unsafe { result::free_sync(p) };
            }
        }
        if !self.module.is_null() {
            // SAFETY: loaded in `load`, unloaded once.
            let _ = unsafe { result::module::unload(self.module) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::Param;

    fn param(role: &'static str, ty: &'static str, index: Option<usize>) -> Param {
        Param {
            name: format!("m_{role}"),
            ty,
            role,
            index,
            tensor: None,
            elements: index.map(|_| 24),
            elements_per_step: index.map(|_| 3),
            bytes: (role == "workspace").then_some(64),
        }
    }

    fn launch() -> Launch {
        Launch {
            kernel: "m".into(),
            sm: 80,
            grid: [2, 1, 1],
            block: [128, 1, 1],
            shared_bytes: 0,
            params: vec![
                param("input", "u64", Some(0)),
                param("output", "u64", Some(0)),
                param("workspace", "u64", None),
                param("steps", "u32", None),
                param("resume", "u32", None),
            ],
            max_steps: 8,
            dynamic_steps: true,
            streamable: true,
            seq_lens_input: None,
            weights_shared_bytes: 0,
            weights_global_bytes: 0,
            max_work: 256,
        }
    }

    #[test]
    fn slots_and_call_checks() {
        let l = launch();
        let s = slots(&l).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[2], Slot::Workspace { bytes: 64 });
        let x = vec![0.0f32; 6];
        check_call(&l, &s, &[&x], 2).unwrap();
        assert!(
            check_call(&l, &s, &[&x], 3)
                .unwrap_err()
                .contains("takes 9")
        );
        assert!(check_call(&l, &s, &[&x], 9).unwrap_err().contains("1 to 8"));
        assert!(check_call(&l, &s, &[], 2).unwrap_err().contains("0 inputs"));
        let mut fixed = l.clone();
        fixed.dynamic_steps = false;
        assert!(
            check_call(&fixed, &s, &[&x], 2)
                .unwrap_err()
                .contains("exactly 8")
        );
        let mut bad = l.clone();
        bad.params[0].elements = Some(25);
        assert!(slots(&bad).unwrap_err().contains("not 8 steps of 3"));
    }

    #[test]
    fn sm_targets_by_capability() {
        assert_eq!(sm_for_capability((8, 0)).unwrap(), 80);
        assert_eq!(sm_for_capability((8, 7)).unwrap(), 86);
        assert_eq!(sm_for_capability((8, 9)).unwrap(), 89);
        assert_eq!(sm_for_capability((9, 0)).unwrap(), 90);
        assert_eq!(sm_for_capability((12, 0)).unwrap(), 90);
        assert!(sm_for_capability((7, 5)).unwrap_err().contains("7.5"));
    }

    #[test]
    fn without_a_driver_opening_is_a_clear_error() {
        if driver_present() {
            eprintln!("a CUDA driver is present: skipped");
            return;
        }
        let e = Gpu::open(0).err().unwrap();
        assert_eq!(e, no_driver_message());
        assert!(e.contains("libcuda.so.1"), "{e}");
    }
}
