//! The blob store's error: an I/O error with what was being done.

#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub context: String,
    #[source]
    pub source: std::io::Error,
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::NotFound
    }
}

/// The text starts with `storage full` (no space, over quota) or `storage read-only` when the
/// filesystem says so, for the answer's status (`http::answer::Condition`).
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::io::ErrorKind as K;
        // ENOSPC, EDQUOT, EROFS on Linux, for kinds the standard library may not map.
        let class = match (self.source.kind(), self.source.raw_os_error()) {
            (K::StorageFull | K::QuotaExceeded, _) | (_, Some(28 | 122)) => {
                Some(crate::store::STORAGE_FULL)
            }
            (K::ReadOnlyFilesystem, _) | (_, Some(30)) => Some(crate::store::STORAGE_READ_ONLY),
            _ => None,
        };
        if let Some(class) = class {
            write!(f, "{class}: ")?;
        }
        write!(f, "blob store: {}: {}", self.context, self.source)
    }
}

/// How the text of an error of a store that cannot be reached starts (see
/// `http::answer::Condition`).
pub const UNAVAILABLE: &str = "blob store: unavailable";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what was being done to an I/O error.
pub(crate) trait Context<T> {
    fn context(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error {
            context: f(),
            source,
        })
    }
}
