//! The CLI's error kinds that choose an exit code: a usage mistake (2), no usable credentials
//! (3), `can-i`'s quiet "no" (1). A leaf of `cli/`: the command files import it, it imports none.

/// A mistake in how a command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// No usable credentials (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// A "no" from `can-i`: exit code 1 and nothing more on stderr.
#[derive(Debug, thiserror::Error)]
#[error("")]
pub struct NoAnswer;
