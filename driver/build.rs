//! The build's identity for the compiled-code cache (docs/cache.md, "The key"): during
//! development every build of one version number is another compiler, whose code may call the
//! runtime's kernels differently, so the key carries a hash of the sources the generated code
//! depends on (the crates from the IR to this one, the C kernels, Cargo.lock's dependency
//! versions) beside the version. Built outside this workspace (no sibling crates), the version
//! alone is the identity, as for a release.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("the workspace").to_path_buf();
    let mut sources = Vec::new();
    for krate in ["ir", "frontends", "passes", "backends", "driver"] {
        let src = root.join(krate).join("src");
        println!("cargo:rerun-if-changed={}", src.display());
        files(&src, &mut sources);
        for f in ["Cargo.toml", "build.rs"] {
            let p = root.join(krate).join(f);
            println!("cargo:rerun-if-changed={}", p.display());
            sources.push(p);
        }
    }
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    sources.push(lock);
    sources.sort();
    // SipHash with fixed keys: the same sources give the same identity on every machine.
    let mut h = std::hash::DefaultHasher::new();
    let mut read = 0;
    for p in &sources {
        if let Ok(bytes) = std::fs::read(p) {
            h.write(
                p.strip_prefix(&root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.write(&bytes);
            read += 1;
        }
    }
    let id = if read > 0 {
        format!("{:016x}", h.finish())
    } else {
        "release".to_string()
    };
    println!("cargo:rustc-env=HLSTMC_BUILD_ID={id}");
}
