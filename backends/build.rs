//! Compiles the wide-vector kernels (src/cpu/wide.c) into this crate for the JIT: generated
//! code calls them by the `hlstm_` names (libraries compile their own copy, see
//! `cpu::wide::c_source`).

fn main() {
    let src = std::fs::read_to_string("src/cpu/wide.c").expect("src/cpu/wide.c");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let c = out.join("hlstm_wide.c");
    std::fs::write(&c, src.replace("NAME_", "hlstm_")).expect("writes hlstm_wide.c");
    cc::Build::new()
        .file(&c)
        .opt_level(3)
        .flag_if_supported("-std=c11")
        .warnings(true)
        .compile("hlstm_wide");
    println!("cargo:rerun-if-changed=src/cpu/wide.c");
}
