//! Passwords: argon2id with the crate's default (OWASP-recommended) parameters, PHC strings;
//! one password policy for every path that sets one.
//!
//! Invariant: every argon2 computation runs through `POOL`, at most `HASH_PERMITS` at once with
//! at most `HASH_QUEUE` callers waiting; the rest are refused at once (`Busy`). argon2 takes
//! 19 MiB per computation, so hashing never holds more than `HASH_PERMITS` × 19 MiB however many
//! logins arrive together.

use std::sync::{Condvar, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

/// Password length bounds, the same for users created by an admin, the bootstrap admin and
/// password changes.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

/// The password policy.
pub fn check_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!("passwords must have at least {MIN_LEN} characters"));
    }
    if n > MAX_LEN {
        return Err(format!("passwords must have at most {MAX_LEN} characters"));
    }
    Ok(())
}

/// argon2 computations running at once, and callers allowed to wait for one.
pub const HASH_PERMITS: usize = 2;
pub const HASH_QUEUE: usize = 32;

/// Too many password checks are running or waiting.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many password checks at once; retry shortly")]
pub struct Busy;

struct Pool {
    /// (running, waiting)
    state: Mutex<(usize, usize)>,
    freed: Condvar,
}

static POOL: Pool = Pool {
    state: Mutex::new((0, 0)),
    freed: Condvar::new(),
};

/// Runs `f` (an argon2 computation) on the bounded pool. Blocking.
fn pooled<T>(f: impl FnOnce() -> T) -> Result<T, Busy> {
    {
        let mut st = POOL.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.0 >= HASH_PERMITS {
            if st.1 >= HASH_QUEUE {
                return Err(Busy);
            }
            st.1 += 1;
            while st.0 >= HASH_PERMITS {
                st = POOL.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.1 -= 1;
        }
        st.0 += 1;
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let mut st = POOL.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.0 -= 1;
            POOL.freed.notify_one();
        }
    }
    let _release = Release;
    Ok(f())
}

/// Hashes a password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    pooled(|| hash_now(password)).map_err(|e| e.to_string())?
}

fn hash_now(password: &str) -> Result<String, String> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string (constant-time inside argon2).
pub fn verify(password: &str, stored: &str) -> Result<bool, Busy> {
    // A password longer than any the policy allows is wrong without costing a hash.
    if password.len() > MAX_LEN * 4 {
        return Ok(false);
    }
    pooled(|| {
        PasswordHash::new(stored).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
}

/// A hash to verify against when the user does not exist, so that a miss costs as much as a hit
/// and response times do not reveal which user names exist.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_now("berth decoy password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &h).unwrap());
        assert!(!super::verify("wrong horse", &h).unwrap());
        assert!(!super::verify("x", "not a phc string").unwrap());
        assert!(super::check_policy("short").is_err());
        assert!(super::check_policy("long enough").is_ok());
    }
}
