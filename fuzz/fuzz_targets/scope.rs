//! Docker token scopes (`repository:NAME:ACTIONS`, `registry:catalog:*`) from arbitrary text:
//! no panic; a repository scope names a repository name that parses on its own.
#![no_main]

use berth::policy::scope::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for one in s.split(' ') {
        let _ = Scope::parse(one);
    }
});
