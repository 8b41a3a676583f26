//! The value types every layer shares: digests (and their hashers), repository names, tags
//! and references. A leaf: it uses no other berth module, so the seams (`store`, `blob`) and
//! the services above them (`content`, `policy`, `http`) all depend on it and not on each other.

mod address;
mod digest;
mod name;
mod resumable;

pub use address::{ClientAddress, Hangup};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use name::{NameError, Reference, ReferenceError, RepositoryName, Tag, TagError};
pub use resumable::ResumableSha256;

/// A size in bytes as people read it: `512 B`, `1.5 KiB`, `12.0 MiB`, `1.25 GiB` (binary
/// units; the console and the CLI show sizes the same way).
pub fn readable_size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(super::readable_size(0), "0 B");
        assert_eq!(super::readable_size(1023), "1023 B");
        assert_eq!(super::readable_size(1536), "1.5 KiB");
        assert_eq!(super::readable_size(12 << 20), "12.0 MiB");
        assert_eq!(super::readable_size(5 << 29), "2.50 GiB");
    }
}
