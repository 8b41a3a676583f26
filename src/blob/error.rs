//! The blob store's error: an I/O error with what was being done.

#[derive(Debug, thiserror::Error)]
#[error("blob store: {context}: {source}")]
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

/// How the text of an error of a store that cannot be reached starts (see
/// `http::InternalError::unavailable`).
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
