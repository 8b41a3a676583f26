//! Repository names, tags, references and digests from arbitrary text: no panic, and what
//! parses prints back to text that parses to the same value.
#![no_main]

use berth::types::{Digest, Reference, RepositoryName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = s.parse::<RepositoryName>() {
        let again: RepositoryName = n.to_string().parse().expect("a printed name parses");
        assert_eq!(again.to_string(), n.to_string());
        assert_eq!(n.to_string(), s, "a name prints as it was written");
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(d) = s.parse::<Digest>() {
        let again: Digest = d.to_string().parse().expect("a printed digest parses");
        assert_eq!(again, d);
    }
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again.to_string(), r.to_string());
    }
});
