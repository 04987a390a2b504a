//! Writing a file so that it is whole or not there: what every output of hlstmc needs.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder (`.<name>.tmp`,
/// created exclusively, so a link planted at that name is not followed) and a rename, so
/// `path` holds either its old contents or all of the new ones.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    // A stale file (or link) of that name from an earlier crash is removed, not written through.
    let _ = std::fs::remove_file(&tmp);
    write_through(&tmp, path, bytes)
}

/// Writes `bytes` to the new file `tmp` (created exclusively: an existing file or link there is
/// an error), syncs it and renames it to `path`; on failure `tmp` is removed.
pub(crate) fn write_through(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(tmp, path));
    if written.is_err() {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(tmp);
    }
    written
}
