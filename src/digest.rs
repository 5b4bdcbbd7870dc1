//! Content hashes. The engine sidecar records the SHA-256 of the model and of the engine it was
//! built from, and `detrc run` checks a sidecar's source against it; both sides use this one
//! spelling (lowercase hex), from a module below both.

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
