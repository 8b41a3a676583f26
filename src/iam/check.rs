//! What every part of `iam` shares: its error, and the checks of names and text from outside.

use super::password;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(store::Error),
    #[error("generating a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Busy(#[from] password::Busy),
    /// What the caller came from has ended (answered 401, like an unknown credential).
    #[error("the credential or session this request came from has ended")]
    Ended,
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Conflict => Error::Conflict("already exists".into()),
            store::Error::SourceEnded => Error::Ended,
            e => Error::Store(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// User names that name a kind of secret at login, so no user may have them.
pub const RESERVED_USERNAMES: [&str; 4] = ["iamapikey", "iambearer", "iamrefresh", "token"];

/// Checks an organization, robot or user name: lowercase letters, digits, and `-`, `_`, `.` inside;
/// 1 to 64 characters. Organization names must also be valid namespace (repository) components.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= 64
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter()
            .all(|&c| edge(c) || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        return Err(Error::Invalid(format!(
            "invalid {what} name {name:?}: use 1-64 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )));
    }
    if what == "organization" || what == "namespace" {
        name.parse::<crate::types::RepositoryName>()
            .ok()
            .filter(|_| !name.contains('/'))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "invalid {what} name {name:?}: it must be a valid repository path component"
                ))
            })?;
    }
    if what == "user" && (RESERVED_USERNAMES.contains(&name) || uuid::Uuid::try_parse(name).is_ok())
    {
        return Err(Error::Invalid(format!("user name {name:?} is reserved")));
    }
    Ok(())
}

/// Whether `c` is a control character or an invisible formatting one (bidirectional overrides,
/// zero-width characters, line and paragraph separators): what could reorder, hide or break a
/// line of text shown to a person.
pub(super) fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

/// Refuses control characters (escape sequences, newlines) in text stored from outside: it is
/// shown in terminals, logs and the audit trail.
pub fn check_text(what: &str, text: &str) -> Result<()> {
    if text.chars().any(is_hazard) {
        return Err(Error::Invalid(format!(
            "{what} must not contain control or invisible formatting characters (escapes, newlines, tabs, bidirectional overrides)"
        )));
    }
    Ok(())
}
