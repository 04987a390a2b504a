//! Compiles the wide-vector kernels (src/cpu/wide.c) into this crate for the JIT: generated
//! code calls them by the `hlstm_` names. It also compiles them once more, position-independent,
//! into an object whose symbols start with a placeholder prefix: `hlstmc compile` gives each
//! library a copy with its own names (`cpu::wide::library_object`) instead of running the C
//! compiler on the source at every compile.

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

    // `cpu::wide::LIBRARY_PREFIX`.
    let lib_c = out.join("wide_lib.c");
    std::fs::write(&lib_c, src.replace("NAME_", "hlstmc_wide_lib_")).expect("writes wide_lib.c");
    let objects = cc::Build::new()
        .file(&lib_c)
        .opt_level(3)
        .pic(true)
        .debug(false)
        .flag_if_supported("-std=c11")
        .warnings(true)
        .compile_intermediates();
    let [object] = objects.as_slice() else {
        panic!("one object from wide_lib.c, got {objects:?}");
    };
    std::fs::copy(object, out.join("wide_lib.o")).expect("copies wide_lib.o");
    println!("cargo:rerun-if-changed=src/cpu/wide.c");
}
