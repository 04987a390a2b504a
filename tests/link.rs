//! Build integration of `hlstmc compile`: library names that cannot shadow system libraries, the
//! SONAME, and programs built with pkg-config alone and with CMake alone (docs/c-abi.md,
//! "Linking"). Tools that are absent are named in the output; under CI (CI=true) their absence
//! fails the test, since `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = "tests/fixtures/models/hlstm_scan_H64_X32_T8_sp97/model.onnx";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Whether `tool` is there; if not, says so, and fails under CI.
fn require(tool: &str, what: &str) -> bool {
    if have(tool) {
        return true;
    }
    let msg = format!("skipped: `{tool}` is not installed, so {what} is not tested");
    assert!(std::env::var("CI").is_err(), "{msg} (CI installs it)");
    eprintln!("{msg}");
    false
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `hlstmc compile FIXTURE -o DIR --name NAME FLAGS...`.
fn compile(dir: &Path, name: &str, flags: &[&str]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hlstmc"));
    c.arg("compile")
        .arg(root().join(FIXTURE))
        .arg("-o")
        .arg(dir)
        .args(["--name", name])
        .args(flags);
    run_ok(&mut c, &format!("hlstmc compile --name {name}"));
}

/// A program that runs the model once on zeros and calls libm's `sinf`: it prints the ABI
/// version, the run's code and sin(0.5).
fn program(dir: &Path, name: &str) -> PathBuf {
    let src = format!(
        r#"#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "{name}.h"

int main(void) {{
    size_t steps = {name}_max_steps(), batch = {name}_batch();
    const float *ins[1];
    float *outs[2];
    ins[0] = calloc({name}_input_len(0, steps), sizeof(float));
    for (size_t k = 0; k < 2; k++) outs[k] = calloc({name}_output_len(k, steps), sizeof(float));
    void *ctx = {name}_context_create(steps, batch);
    int rc = {name}_run(ctx, steps, batch, ins, outs);
    {name}_context_free(ctx);
    volatile float x = 0.5f;
    printf("%d %d %.6f\n", {name}_version(), rc, sinf(x));
    return rc;
}}
"#
    );
    let path = dir.join("main.c");
    std::fs::write(&path, src).unwrap();
    path
}

const EXPECTED: &str = "3 0 0.479426";

fn run_program(exe: &Path, lib_dir: Option<&Path>) -> String {
    let mut c = Command::new(exe);
    if let Some(d) = lib_dir {
        c.env("LD_LIBRARY_PATH", d);
    }
    run_ok(&mut c, &exe.display().to_string())
        .trim()
        .to_string()
}

/// `--name m` (and the other system libraries' names) still lets a program that uses libm link,
/// statically and dynamically; the shared library's SONAME carries the ABI version.
#[test]
fn system_library_names_do_not_shadow() {
    if !require("cc", "linking against a compiled library") {
        return;
    }
    for name in ["m", "c", "pthread", "dl", "rt"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        compile(dir, name, &[]);
        assert!(
            !dir.join(format!("lib{name}.a")).exists()
                && !dir.join(format!("lib{name}.so")).exists(),
            "--name {name} wrote a file that shadows the system's lib{name}"
        );
        let main = program(dir, name);
        let stat = dir.join("static");
        run_ok(
            Command::new("cc")
                .arg("-I")
                .arg(dir)
                .arg(&main)
                .arg(dir.join(format!("libhlstmc_{name}.a")))
                .args(["-lm", "-o"])
                .arg(&stat),
            &format!("static link, --name {name}"),
        );
        assert_eq!(run_program(&stat, None), EXPECTED, "static, --name {name}");
        let dynamic = dir.join("dynamic");
        run_ok(
            Command::new("cc")
                .arg("-I")
                .arg(dir)
                .arg(&main)
                .arg("-L")
                .arg(dir)
                .arg(format!("-lhlstmc_{name}"))
                .arg("-lm")
                .arg(format!("-Wl,-rpath,{}", dir.display()))
                .arg("-o")
                .arg(&dynamic),
            &format!("shared link, --name {name}"),
        );
        assert_eq!(
            run_program(&dynamic, None),
            EXPECTED,
            "shared, --name {name}"
        );
        if have("readelf") {
            let so = run_ok(
                Command::new("readelf")
                    .arg("-d")
                    .arg(dir.join(format!("libhlstmc_{name}.so"))),
                "readelf",
            );
            assert!(
                so.contains(&format!("Library soname: [libhlstmc_{name}.so.3]")),
                "{so}"
            );
            let exe = run_ok(Command::new("readelf").arg("-d").arg(&dynamic), "readelf");
            assert!(
                exe.contains(&format!("Shared library: [libhlstmc_{name}.so.3]")),
                "the program records the SONAME:\n{exe}"
            );
        } else {
            eprintln!("note: readelf is not installed; the SONAME is not checked");
        }
    }
}

/// A program built with `pkg-config --cflags --libs hlstmc_NAME` alone, for a library with
/// threads (whose `Libs` add -pthread).
#[test]
fn pkg_config_alone_builds_a_program() {
    if !require("cc", "linking") || !require("pkg-config", "the pkg-config file") {
        return;
    }
    for (name, flags) in [("hp", &[][..]), ("hpt", &["--threads", "2"][..])] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        compile(dir, name, flags);
        let pc = run_ok(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", dir)
                .args(["--cflags", "--libs", &format!("hlstmc_{name}")]),
            "pkg-config",
        );
        if flags.is_empty() {
            assert!(!pc.contains("-pthread"), "{pc}");
        } else {
            assert!(pc.contains("-pthread"), "{pc}");
        }
        let main = program(dir, name);
        let exe = dir.join("app");
        run_ok(
            Command::new("cc")
                .arg(&main)
                .args(pc.split_whitespace())
                .arg("-o")
                .arg(&exe),
            &format!("cc main.c $(pkg-config ...): {pc}"),
        );
        assert_eq!(run_program(&exe, Some(dir)), EXPECTED, "{name}");
        // The folder moves with its .pc file: prefix is ${pcfiledir}.
        let moved = tmp.path().join("moved");
        std::fs::create_dir(&moved).unwrap();
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            if f.file_type().unwrap().is_file() || f.file_type().unwrap().is_symlink() {
                std::fs::rename(f.path(), moved.join(f.file_name())).unwrap();
            }
        }
        let pc2 = run_ok(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", &moved)
                .args(["--cflags", &format!("hlstmc_{name}")]),
            "pkg-config",
        );
        assert!(pc2.contains("moved"), "{pc2}");
    }
}

/// A CMake project that uses the written package alone: find_package and
/// target_link_libraries, shared and static.
#[test]
fn cmake_package_alone_builds_a_program() {
    if !require("cc", "linking") || !require("cmake", "the CMake package") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    compile(&lib, "m", &["--threads", "2"]);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    program(&src, "m");
    std::fs::write(
        src.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.13)\n\
             project(app C)\n\
             find_package(hlstmc_m CONFIG REQUIRED PATHS \"{}\" NO_DEFAULT_PATH)\n\
             add_executable(app main.c)\n\
             target_link_libraries(app PRIVATE hlstmc::m m)\n\
             add_executable(app_static main.c)\n\
             target_link_libraries(app_static PRIVATE hlstmc::m_static m)\n",
            lib.display()
        ),
    )
    .unwrap();
    let build = tmp.path().join("build");
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(&build),
        "cmake configure",
    );
    run_ok(
        Command::new("cmake").arg("--build").arg(&build),
        "cmake --build",
    );
    // CMake gives the program the imported library's folder as its rpath.
    assert_eq!(run_program(&build.join("app"), None), EXPECTED, "shared");
    assert_eq!(
        run_program(&build.join("app_static"), None),
        EXPECTED,
        "static"
    );
}

/// `--emit pc` without a library to describe is refused before any work.
#[test]
fn build_files_need_a_library() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hlstmc"))
        .arg("compile")
        .arg(root().join(FIXTURE))
        .arg("-o")
        .arg(tmp.path())
        .args(["--emit", "obj,header,pc"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("add so or a to --emit"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
