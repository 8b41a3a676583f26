//! Manifests and indexes (with `subject`) as a client pushes them: no panic, whatever the bytes
//! and the content type.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 5] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES.get(usize::from(pick) % (TYPES.len() + 1)).copied();
    let _ = berth::content::manifest::parse(ct, body);
});
