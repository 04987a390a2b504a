//! hlstmc backends. `cpu`: Cranelift code generation for the kernel IR (a JIT now, object files
//! later, through one code path over `cranelift_module::Module`). `ptx`: PTX text for NVIDIA GPUs
//! (docs/ptx.md). `cuda`: a runner for that PTX over the CUDA driver API loaded at run time.

pub mod c_abi;
pub mod cpu;
pub mod cuda;
pub mod ptx;
