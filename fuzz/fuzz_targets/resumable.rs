//! The resumable SHA-256 whose state is stored as text between chunks (S3 upload sessions):
//! hashing in two parts through the text state gives the digest of hashing at once, and state
//! text from outside (a damaged row) is refused or taken up without panic.
#![no_main]

use berth::types::{Digest, ResumableSha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(mut h) = ResumableSha256::from_text(text) {
            h.update(b"more");
            let _ = h.finish();
        }
    }
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let k = usize::from(cut) * bytes.len() / 256;
    let mut first = ResumableSha256::default();
    first.update(&bytes[..k]);
    let mut resumed =
        ResumableSha256::from_text(&first.to_text()).expect("its own state text is taken up");
    resumed.update(&bytes[k..]);
    let at_once: Digest = Digest::sha256(bytes);
    assert_eq!(resumed.finish(), at_once);
});
