//! What berth reads of outside JWTs and key sets before any signature is checked: a JSON Web Key
//! Set (a trust's, or an issuer's), and a token's unverified claims. No panic, whatever comes.
#![no_main]

use berth::auth::workload::{looks_like_jwt, parse_jwks, unverified_claims};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_jwks(s);
    if looks_like_jwt(s) {
        let _ = unverified_claims(s);
    }
});
