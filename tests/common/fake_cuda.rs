//! The stand-in CUDA driver (ptx-sim/fake-cuda) for tests without a GPU.

use std::path::PathBuf;
use std::process::Command;

/// Builds ptx-sim/fake-cuda (a stand-in `libcuda` whose kernels run on the PTX interpreter) in
/// its own target folder and returns a folder holding it as `libcuda.so` and `libcuda.so.1`,
/// for `LD_LIBRARY_PATH`.
pub fn fake_driver() -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/fake-cuda");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let o = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "hlstm-fake-cuda",
            "--target-dir",
        ])
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(
        o.status.success(),
        "building hlstm-fake-cuda: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    for name in ["libcuda.so", "libcuda.so.1"] {
        std::fs::copy(
            target.join("release/libhlstm_fake_cuda.so"),
            dir.path().join(name),
        )
        .unwrap();
    }
    dir
}
