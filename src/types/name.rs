//! Repository names, tags and manifest references as validated newtypes.
//!
//! The grammars are those of the OCI distribution spec ("Pulling manifests"): a repository name is
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*` and a tag is
//! `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Nothing here touches the filesystem: names live only in
//! the metadata store.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Longest repository name accepted, as in CNCF Distribution.
const MAX_NAME_LEN: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error(
        "invalid repository name: each path component must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
    )]
    Invalid,
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", always followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.split('/').all(component_ok) {
            Ok(RepositoryName(s.to_owned()))
        } else {
            Err(NameError::Invalid)
        }
    }
}

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
pub struct TagError;

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b
            .iter()
            .skip(1)
            .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Tag(s.to_owned()))
        } else {
            Err(TagError)
        }
    }
}

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag cannot contain ':', so a colon means the client meant a digest.
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let ok = [
            "a",
            "acme/app",
            "acme/team/app",
            "a.b_c__d---e/f0",
            "library/ubuntu",
            "x9",
        ];
        for n in ok {
            assert!(n.parse::<RepositoryName>().is_ok(), "{n} should be valid");
        }
        let bad = [
            "",
            "A",
            "acme/",
            "/acme",
            "acme//app",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_",
            "a/.b",
            "a b",
            "../etc",
            "a/../b",
            "a%2fb",
            "é",
        ];
        for n in bad {
            assert!(
                n.parse::<RepositoryName>().is_err(),
                "{n} should be invalid"
            );
        }
        assert_eq!(
            "a".repeat(256).parse::<RepositoryName>(),
            Err(NameError::TooLong)
        );
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
        // Tags and references print as they were written too.
        let t: Tag = "v1.2_rc-3".parse().unwrap();
        assert_eq!(
            (t.as_str(), t.to_string(), format!("{t:?}")),
            (
                "v1.2_rc-3",
                "v1.2_rc-3".to_owned(),
                "\"v1.2_rc-3\"".to_owned()
            )
        );
        let r: Reference = "v1".parse().unwrap();
        assert_eq!(r.to_string(), "v1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(d.parse::<Reference>().unwrap().to_string(), d);
        // It prints as it was written (paths and keys are built from it).
        let n: RepositoryName = "acme/team/app".parse().unwrap();
        assert_eq!(
            (n.to_string(), format!("{n:?}")),
            ("acme/team/app".to_owned(), "\"acme/team/app\"".to_owned())
        );
    }

    #[test]
    fn tags_and_references() {
        for t in ["latest", "v1.2.3", "_x", "A-b.c_d", &"a".repeat(128)] {
            assert!(t.parse::<Tag>().is_ok(), "{t}");
        }
        for t in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(t.parse::<Tag>().is_err(), "{t}");
        }
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
    }
}
