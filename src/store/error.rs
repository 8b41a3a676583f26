//! The metadata store's one error type: unique-constraint violations become `Conflict`, an
//! unreachable or overloaded database `Unavailable` (answered 503).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata store: {0}")]
    Sqlite(rusqlite::Error),
    #[error("metadata store: {0}")]
    Postgres(::postgres::Error),
    /// The database cannot be reached (down, restarting, every connection busy): a retry may
    /// succeed, and the server answers 503 (`UNAVAILABLE` starts this error's text).
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The disk under the database is full (SQLite's `SQLITE_FULL`, PostgreSQL's `53100`):
    /// nothing was written, and writes succeed again once space is freed. Answered 507.
    #[error("storage full: metadata store: {0}")]
    Full(String),
    /// The database's files cannot be written (a read-only filesystem or database, a disk
    /// refusing writes): reads go on. Answered 503.
    #[error("storage read-only: metadata store: {0}")]
    ReadOnly(String),
    /// A uniqueness rule refused the write (the thing already exists).
    #[error("already exists")]
    Conflict,
    /// What the write would derive from has ended (a deleted or rotated credential, an ended
    /// session, trust or robot): nothing may be made from it, whatever a node remembers.
    #[error("the credential or session this request came from has ended")]
    SourceEnded,
    #[error("metadata store: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("metadata store: corrupt row: {0}")]
    Corrupt(String),
    #[error("metadata store: {0}")]
    Config(String),
    #[error("metadata store: schema version {found} is newer than this berth knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
}

/// How the text of an error starts when the disk under a store is full, or read-only (see
/// `http::answer::Condition`).
pub const STORAGE_FULL: &str = "storage full";
pub const STORAGE_READ_ONLY: &str = "storage read-only";

/// How the text of `Error::Unavailable` starts (see `http::answer::Condition`).
pub const UNAVAILABLE: &str = "metadata store unavailable";

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => Error::Conflict,
            Some(rusqlite::ErrorCode::DiskFull) => Error::Full(e.to_string()),
            // A read-only database, or the disk refusing a write (SQLite reports a filesystem
            // turned read-only under it as a disk I/O error).
            Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::SystemIoFailure) => {
                Error::ReadOnly(e.to_string())
            }
            _ => Error::Sqlite(e),
        }
    }
}

impl From<::postgres::Error> for Error {
    fn from(e: ::postgres::Error) -> Self {
        use ::postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict,
            Some(c) if *c == SqlState::DISK_FULL => Error::Full(e.to_string()),
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Error::ReadOnly(e.to_string()),
            // Class 08 (connection), 57 (operator intervention: shutdown, cancelled by the
            // statement timeout), 53 (insufficient resources).
            Some(c) if ["08", "57", "53"].iter().any(|k| c.code().starts_with(k)) => {
                Error::Unavailable(e.to_string())
            }
            Some(_) => Error::Postgres(e),
            None if e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
            {
                Error::Unavailable(e.to_string())
            }
            None if e.to_string().contains("timed out") || e.to_string().contains("connect") => {
                Error::Unavailable(e.to_string())
            }
            None => Error::Postgres(e),
        }
    }
}

impl Error {
    /// Whether a retry later may succeed (the engine is down or overloaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}
