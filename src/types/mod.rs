//! The value types every layer shares: digests (and their hashers), repository names, tags
//! and references. A leaf: it uses no other berth module, so the seams (`store`, `blob`) and
//! the services above them (`content`, `policy`, `http`) all depend on it and not on each other.

mod digest;
mod name;
mod resumable;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use name::{NameError, Reference, ReferenceError, RepositoryName, Tag, TagError};
pub use resumable::ResumableSha256;
