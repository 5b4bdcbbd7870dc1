//! Loading ONNX models: memory-mapped, zero-copy protobuf decoding, external data.

pub mod external;
pub mod proto;

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use proto::ModelProto;

/// A decoded model and where it came from (external data is resolved relative to `dir`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub proto: ModelProto,
    pub path: PathBuf,
    /// True if any tensor had its bytes in an external file.
    pub had_external_data: bool,
}

/// Maps a file read-only. The map outlives this call inside the returned `Bytes`, and every
/// tensor decoded from it points into the map instead of owning a copy.
pub fn map_file(path: &Path) -> Result<Bytes> {
    let read_err = |cause| Error::Read {
        path: path.to_path_buf(),
        cause,
    };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only. A concurrent truncation of the file by another process
    // would fault; that is the documented hazard of every mmap-based loader and we write our
    // own outputs by rename, never in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    let origin = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Bytes::from_owner(Mapped::new(map, origin)))
}

/// A file map registered for [`release_mapped_pages`] and [`mapped_origin`] while it lives.
struct Mapped(memmap2::Mmap);

/// Live maps: start address, length, and the file mapped.
type Registry = Vec<(usize, usize, PathBuf)>;

static MAPPED: std::sync::Mutex<Registry> = std::sync::Mutex::new(Vec::new());

fn mapped() -> std::sync::MutexGuard<'static, Registry> {
    MAPPED.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mapped {
    fn new(map: memmap2::Mmap, origin: PathBuf) -> Mapped {
        mapped().push((map.as_ptr() as usize, map.len(), origin));
        Mapped(map)
    }
}

/// The file and byte offset `bytes` were mapped from, when they lie inside a live map made by
/// [`map_file`]: tensors decoded from a model file point into its map, so a runtime that maps
/// files itself can be told where to find them instead of being handed a copy.
pub fn mapped_origin(bytes: &[u8]) -> Option<(PathBuf, u64)> {
    let start = bytes.as_ptr() as usize;
    let end = start.checked_add(bytes.len())?;
    mapped()
        .iter()
        .find(|(a, l, _)| start >= *a && end <= a + l)
        .map(|(a, _, p)| (p.clone(), (start - a) as u64))
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Unregistered before the map goes, under the lock release_mapped_pages holds.
        let mut m = mapped();
        let key = (self.0.as_ptr() as usize, self.0.len());
        if let Some(i) = m.iter().position(|e| (e.0, e.1) == key) {
            m.swap_remove(i);
        }
    }
}

/// Drops the resident pages of every live model file map from this process's memory. The maps
/// are read-only and file-backed, so nothing is lost: a page read again is faulted back in from
/// the page cache. What it frees are pages nothing reads any more (weights a pass replaced),
/// which would otherwise count in the process's memory until the map goes.
pub fn release_mapped_pages() {
    let m = mapped();
    for &(addr, len, _) in m.iter() {
        // SAFETY: a live read-only shared file mapping (registered while its Mmap lives, and
        // the lock keeps it alive here); MADV_DONTNEED on it only drops page-table entries.
        unsafe {
            libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// Decodes a model without touching external data: the exact protobuf as stored.
pub fn load_proto(path: &Path) -> Result<ModelProto> {
    let bytes = map_file(path)?;
    decode(path, bytes)
}

pub fn decode(path: &Path, bytes: Bytes) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let model = ModelProto::decode(bytes).map_err(|cause| Error::Decode {
        path: path.to_path_buf(),
        cause,
    })?;
    // Protobuf accepts many byte strings as a valid message (e.g. a text file that happens to
    // parse as a few unknown fields). A model without a graph or opset is not ONNX.
    if model.graph.is_none() {
        return Err(Error::Invalid(format!(
            "{} decodes as protobuf but has no graph: not an ONNX model",
            path.display()
        )));
    }
    if model.opset_import.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has no opset_import: not a usable ONNX model",
            path.display()
        )));
    }
    Ok(model)
}

/// Loads a model and resolves external data into (memory-mapped) `raw_data`.
pub fn load(path: &Path) -> Result<Loaded> {
    let mut proto = load_proto(path)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let had_external_data = external::resolve(&mut proto, &dir)?;
    Ok(Loaded {
        proto,
        path: path.to_path_buf(),
        had_external_data,
    })
}
