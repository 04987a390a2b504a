//! hlstmc backends. `cpu`: Cranelift code generation for the kernel IR (a JIT now, object files
//! later, through one code path over `cranelift_module::Module`).

pub mod cpu;
