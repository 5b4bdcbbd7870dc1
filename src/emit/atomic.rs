//! Every output detrc writes appears complete or not at all: it is written to a temporary file
//! in the target folder (same filesystem, so the rename is atomic) and renamed over the target.
//! The input may be memory-mapped from the very path we replace; rename leaves the old inode,
//! and so the map, intact.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

pub fn write<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let werr = |cause| Error::Write {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Like `mkdir -p` in a Makefile recipe: an output folder that does not exist yet is made.
    std::fs::create_dir_all(dir).map_err(werr)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(werr)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w).map_err(werr)?;
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    // tempfile creates files 0600; outputs are ordinary build artefacts.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path).map_err(|e| werr(e.error))?;
    Ok(())
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write(path, |w| w.write_all(bytes))
}
