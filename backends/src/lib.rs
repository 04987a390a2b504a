//! hlstmc backends. `cpu`: Cranelift code generation for the kernel IR, the JIT and object files
//! with a C ABI through one code path over `cranelift_module::Module` (docs/c-abi.md). `ptx`:
//! PTX text for NVIDIA GPUs (docs/ptx.md). `cuda`: a runner for that PTX over the CUDA driver
//! API loaded at run time, and the generated host library.

pub mod c_abi;
pub mod cpu;
pub mod cuda;
pub mod ptx;
