//! A stand-in for the CUDA driver library (`libcuda.so.1`) for tests on machines without a GPU
//! (docs/ptx.md): the driver calls of `hlstm_backends::cuda` with the PTX kernels run by the PTX
//! interpreter (hlstm-ptx-sim). tests/cuda.rs builds it as `libcuda.so` and points
//! `LD_LIBRARY_PATH` at it, so `hlstmc run --engine cuda` goes through the real runner, the real
//! `cudarc` bindings and `dlopen`, and every fixture is checked against its reference outputs.
//!
//! One device (compute capability 8.0, `FAKE_CUDA_SMS` multiprocessors, default 8, each taking
//! `FAKE_CUDA_BLOCKS_PER_SM` blocks, default 2), one context, any number of loaded modules. Each
//! module is an interpreter device with its own memory; `cuMemAlloc` allocates in the module
//! loaded last (the runner and the host library allocate right after loading), and a device
//! address carries its module in its top 16 bits, so copies and launches find the right memory.
//! Everything lives on the calling thread. A failing launch returns CUDA_ERROR_LAUNCH_FAILED,
//! and `cuGetErrorString` gives the interpreter's message.

#![allow(clippy::missing_safety_doc)]

use hlstm_ptx_sim::{Arg, Device, LaunchConfig, parse};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

const SUCCESS: c_int = 0;
const INVALID_VALUE: c_int = 1;
const NOT_INITIALIZED: c_int = 3;
const INVALID_PTX: c_int = 218;
const INVALID_HANDLE: c_int = 400;
const NOT_FOUND: c_int = 500;
const LAUNCH_FAILED: c_int = 719;
const COOPERATIVE_LAUNCH_TOO_LARGE: c_int = 720;

/// A loaded module: its interpreter device and kernel names.
struct Loaded {
    device: Device,
    functions: Vec<String>,
}

#[derive(Default)]
struct State {
    init: bool,
    /// Loaded modules; a CUmodule is its index + 1 (None once unloaded).
    modules: Vec<Option<Loaded>>,
    /// The module `cuMemAlloc` allocates in: the one loaded last.
    current: Option<usize>,
    /// The message of the last failure.
    message: CString,
}

/// Device addresses are the interpreter's (below 2^48) with the module index + 1 above.
const MODULE_SHIFT: u32 = 48;

fn encode(module: usize, addr: u64) -> u64 {
    ((module as u64 + 1) << MODULE_SHIFT) | addr
}

fn decode(addr: u64) -> (Option<usize>, u64) {
    let m = (addr >> MODULE_SHIFT) as usize;
    (m.checked_sub(1), addr & ((1 << MODULE_SHIFT) - 1))
}

/// A CUfunction: the module index + 1 above 16 bits, the kernel index + 1 below.
fn function_handle(module: usize, kernel: usize) -> usize {
    ((module + 1) << 16) | (kernel + 1)
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn fail(code: c_int, msg: String) -> c_int {
    with(|s| s.message = CString::new(msg.replace('\0', " ")).unwrap_or_default());
    code
}

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(_flags: c_uint) -> c_int {
    with(|s| s.init = true);
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> c_int {
    unsafe { *n = 1 };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(d: *mut c_int, ordinal: c_int) -> c_int {
    if ordinal != 0 {
        return INVALID_VALUE;
    }
    unsafe { *d = 0 };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(v: *mut c_int, attrib: c_int, _dev: c_int) -> c_int {
    let x = match attrib {
        75 => 8,                                    // compute capability major
        76 => 0,                                    // minor
        16 => env_u32("FAKE_CUDA_SMS", 8) as c_int, // multiprocessors
        95 => 1,                                    // cooperative launch
        _ => 0,
    };
    unsafe { *v = x };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(buf: *mut c_char, len: c_int, _dev: c_int) -> c_int {
    let name = b"hlstm-fake-cuda (PTX interpreter)\0";
    let n = name.len().min(len.max(0) as usize);
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr() as *const c_char, buf, n) };
    if n > 0 {
        unsafe { *buf.add(n - 1) = 0 };
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut *mut c_void, _dev: c_int) -> c_int {
    if !with(|s| s.init) {
        return NOT_INITIALIZED;
    }
    unsafe { *ctx = 0x1000 as *mut c_void };
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(_dev: c_int) -> c_int {
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(_ctx: *mut c_void) -> c_int {
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> c_int {
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(m: *mut *mut c_void, image: *const c_void) -> c_int {
    let text = unsafe { CStr::from_ptr(image as *const c_char) }.to_string_lossy();
    let module = match parse(&text) {
        Ok(m) => m,
        Err(e) => return fail(INVALID_PTX, e),
    };
    let names: Vec<String> = module.kernels.iter().map(|k| k.name.clone()).collect();
    let device = match Device::new(module) {
        Ok(d) => d,
        Err(e) => return fail(INVALID_PTX, e),
    };
    let index = with(|s| {
        s.modules.push(Some(Loaded {
            device,
            functions: names,
        }));
        s.current = Some(s.modules.len() - 1);
        s.modules.len()
    });
    unsafe { *m = index as *mut c_void };
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(m: *mut c_void) -> c_int {
    let i = (m as usize).wrapping_sub(1);
    with(|s| match s.modules.get_mut(i) {
        Some(slot @ Some(_)) => {
            *slot = None;
            if s.current == Some(i) {
                s.current = None;
            }
            SUCCESS
        }
        _ => INVALID_HANDLE,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(
    f: *mut *mut c_void,
    m: *mut c_void,
    name: *const c_char,
) -> c_int {
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    let module = (m as usize).wrapping_sub(1);
    let found = with(|s| {
        let l = s.modules.get(module)?.as_ref()?;
        l.functions.iter().position(|k| *k == name)
    });
    match found {
        Some(i) => {
            unsafe { *f = function_handle(module, i) as *mut c_void };
            SUCCESS
        }
        None => fail(NOT_FOUND, format!("no kernel {name}")),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    _f: *mut c_void,
    _block: c_int,
    _smem: usize,
) -> c_int {
    unsafe { *n = env_u32("FAKE_CUDA_BLOCKS_PER_SM", 2) as c_int };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(p: *mut u64, bytes: usize) -> c_int {
    let a = with(|s| {
        let i = s.current?;
        let l = s.modules.get_mut(i)?.as_mut()?;
        Some(encode(i, l.device.alloc_zeroed(bytes.div_ceil(4) * 4)))
    });
    match a {
        Some(a) => {
            unsafe { *p = a };
            SUCCESS
        }
        None => fail(
            INVALID_HANDLE,
            "cuMemAlloc before a module is loaded".into(),
        ),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(_p: u64) -> c_int {
    SUCCESS
}

/// `f` on the device that owns `addr`, with the address as the interpreter knows it.
fn mem<R>(addr: u64, f: impl FnOnce(&mut Device, u64) -> Result<R, String>) -> Result<R, c_int> {
    let (module, local) = decode(addr);
    with(|s| {
        let Some(l) = module.and_then(|m| s.modules.get_mut(m)?.as_mut()) else {
            s.message =
                CString::new(format!("{addr:#x} is not a device address")).unwrap_or_default();
            return Err(INVALID_VALUE);
        };
        f(&mut l.device, local).map_err(|e| {
            s.message = CString::new(e).unwrap_or_default();
            INVALID_VALUE
        })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(p: u64, v: u8, bytes: usize) -> c_int {
    if v != 0 || !bytes.is_multiple_of(4) {
        return fail(INVALID_VALUE, "cuMemsetD8: only zeroing whole words".into());
    }
    match mem(p, |d, a| d.write_f32(a, &vec![0.0; bytes / 4])) {
        Ok(()) => SUCCESS,
        Err(c) => c,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, bytes: usize) -> c_int {
    if !bytes.is_multiple_of(4) {
        return fail(INVALID_VALUE, "cuMemcpyHtoD: whole words only".into());
    }
    let data = unsafe { std::slice::from_raw_parts(src as *const f32, bytes / 4) }.to_vec();
    match mem(dst, |d, a| d.write_f32(a, &data)) {
        Ok(()) => SUCCESS,
        Err(c) => c,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, bytes: usize) -> c_int {
    if !bytes.is_multiple_of(4) {
        return fail(INVALID_VALUE, "cuMemcpyDtoH: whole words only".into());
    }
    match mem(src, |d, a| d.read_f32(a, bytes / 4)) {
        Ok(v) => {
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut f32, v.len()) };
            SUCCESS
        }
        Err(c) => c,
    }
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _smem: c_uint,
    _stream: *mut c_void,
    params: *mut *mut c_void,
) -> c_int {
    if gy != 1 || gz != 1 || by != 1 || bz != 1 {
        return fail(
            INVALID_VALUE,
            "one-dimensional grids and blocks only".into(),
        );
    }
    let sms = env_u32("FAKE_CUDA_SMS", 8) * env_u32("FAKE_CUDA_BLOCKS_PER_SM", 2);
    if gx > sms {
        return fail(
            COOPERATIVE_LAUNCH_TOO_LARGE,
            format!("{gx} blocks, {sms} resident at most"),
        );
    }
    let (module, kernel) = (
        (f as usize >> 16).wrapping_sub(1),
        (f as usize & 0xffff).wrapping_sub(1),
    );
    with(|s| {
        let Some(l) = s.modules.get_mut(module).and_then(|l| l.as_mut()) else {
            return INVALID_HANDLE;
        };
        let Some(name) = l.functions.get(kernel).cloned() else {
            return INVALID_HANDLE;
        };
        let Some(k) = l.device.module().kernels.iter().find(|x| x.name == name) else {
            return INVALID_HANDLE;
        };
        let mut args = Vec::new();
        for (i, (_, ty)) in k.params.iter().enumerate() {
            let p = unsafe { *params.add(i) };
            args.push(match ty.bytes() {
                // A pointer into this module's memory, as the interpreter knows it.
                8 => match decode(unsafe { *(p as *const u64) }) {
                    (Some(m), local) if m == module => Arg::U64(local),
                    (_, _) => Arg::U64(unsafe { *(p as *const u64) }),
                },
                _ => Arg::U32(unsafe { *(p as *const u32) }),
            });
        }
        let cfg = LaunchConfig {
            grid: gx,
            block: bx,
            seed: env_u32("FAKE_CUDA_SEED", 1) as u64,
            ..Default::default()
        };
        match l.device.launch(&name, &cfg, &args) {
            Ok(_) => SUCCESS,
            Err(e) => {
                s.message = CString::new(e).unwrap_or_default();
                LAUNCH_FAILED
            }
        }
    })
}

fn name_of(e: c_int) -> &'static CStr {
    match e {
        SUCCESS => c"CUDA_SUCCESS",
        INVALID_VALUE => c"CUDA_ERROR_INVALID_VALUE",
        NOT_INITIALIZED => c"CUDA_ERROR_NOT_INITIALIZED",
        INVALID_PTX => c"CUDA_ERROR_INVALID_PTX",
        INVALID_HANDLE => c"CUDA_ERROR_INVALID_HANDLE",
        NOT_FOUND => c"CUDA_ERROR_NOT_FOUND",
        LAUNCH_FAILED => c"CUDA_ERROR_LAUNCH_FAILED",
        COOPERATIVE_LAUNCH_TOO_LARGE => c"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE",
        _ => c"CUDA_ERROR_UNKNOWN",
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(e: c_int, s: *mut *const c_char) -> c_int {
    unsafe { *s = name_of(e).as_ptr() };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(_e: c_int, s: *mut *const c_char) -> c_int {
    // The message lives in the thread's state until the next failure.
    let p = with(|st| st.message.as_ptr());
    unsafe { *s = p };
    SUCCESS
}
