//! Content digests (`sha256:<hex>`, `sha512:<hex>`): a validated newtype and the hashers behind it.
//!
//! A `Digest` is only ever built by `FromStr` or by finishing a hasher, so every digest that reaches
//! the stores has a known algorithm and lowercase hex of the right length. That is what makes it
//! safe to turn a digest into a file name.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// The digest algorithms berth verifies and stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a digest we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must have the form <algorithm>:<encoded>")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    #[error("{0} digest must be {1} lowercase hex characters")]
    BadEncoding(&'static str, usize),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a complete byte slice (manifests, small blobs).
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::Malformed)?;
        // The grammar from the OCI image spec: algorithm-component ([+._-] algorithm-component)*,
        // encoded [a-zA-Z0-9=_-]+. We check it before naming the algorithm unsupported.
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !enc_ok {
            return Err(DigestError::Malformed);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let len = algorithm.hex_len();
        if enc.len() != len
            || !enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding(algorithm.as_str(), len));
        }
        Ok(Digest {
            algorithm,
            hex: enc.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm. `Clone` so that an upload's state can be kept between
/// `PATCH` requests.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Digest {
    /// The digest of a SHA-256 sum.
    pub fn from_sha256(sum: [u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sum),
        }
    }
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match input.parse::<Digest>() {
            Ok(d) => format!("ok {d}"),
            Err(e) => format!("err {e}"),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn parse_table() {
        let e3b = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        check(&format!("sha256:{e3b}"), &format!("ok sha256:{e3b}"));
        check(
            &format!("sha256:{}", e3b.to_uppercase()),
            "err sha256 digest must be 64 lowercase hex characters",
        );
        check(
            &format!("sha256:{}", &e3b[1..]),
            "err sha256 digest must be 64 lowercase hex characters",
        );
        check(
            &format!("sha512:{}", "ab".repeat(64)),
            &format!("ok sha512:{}", "ab".repeat(64)),
        );
        check(
            "sha384:abc",
            "err unsupported digest algorithm \"sha384\" (sha256 and sha512 are supported)",
        );
        check(
            "sha256",
            "err digest must have the form <algorithm>:<encoded>",
        );
        check(
            "sha256:",
            "err digest must have the form <algorithm>:<encoded>",
        );
        check(
            "SHA256:abc",
            "err digest must have the form <algorithm>:<encoded>",
        );
        check(
            "sha256:../../etc",
            "err digest must have the form <algorithm>:<encoded>",
        );
        check(
            ":abc",
            "err digest must have the form <algorithm>:<encoded>",
        );
        // `=`, `_` and `-` belong to the grammar's encoded part: well formed, not hex.
        for enc in ["ab=cd", "ab_cd", "ab-cd"] {
            check(
                &format!("sha256:{enc}"),
                "err sha256 digest must be 64 lowercase hex characters",
            );
        }
        check(
            "sha256:ab!cd",
            "err digest must have the form <algorithm>:<encoded>",
        );
    }

    #[test]
    fn debug_shows_the_digest_and_the_hasher_hashes_what_it_is_fed() {
        let d: Digest = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            .parse()
            .unwrap();
        assert_eq!(format!("{d:?}"), d.to_string());
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), d);
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        assert!(
            h.finish()
                .to_string()
                .starts_with("sha512:ddaf35a193617aba")
        );
    }

    #[test]
    fn hashes_known_vectors() {
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(
            Digest::of(Algorithm::Sha512, b"")
                .to_string()
                .starts_with("sha512:cf83e135")
        );
    }
}
