//! SHA-256 whose state can be stored and taken up again on another node: the eight state words,
//! the length so far and the bytes of an unfinished block (RFC 6234 §6.2 padding at the end).
//! The compression function is `sha2`'s (hardware-accelerated where the CPU has it).

use sha2::digest::generic_array::GenericArray;

use super::digest::Digest;

const INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far (whole blocks and `pending`).
    len: u64,
    /// The start of an unfinished block (< 64 bytes).
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INIT,
            len: 0,
            pending: Vec::with_capacity(64),
        }
    }
}

impl ResumableSha256 {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = GenericArray::clone_from_slice(&self.pending);
            sha2::compress256(&mut self.state, &[block]);
            self.pending.clear();
        }
        let whole = bytes.len() / 64 * 64;
        if whole > 0 {
            let blocks: Vec<GenericArray<u8, _>> = bytes[..whole]
                .chunks_exact(64)
                .map(GenericArray::clone_from_slice)
                .collect();
            sha2::compress256(&mut self.state, &blocks);
        }
        self.pending.extend_from_slice(&bytes[whole..]);
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(64)
            .map(GenericArray::clone_from_slice)
            .collect();
        sha2::compress256(&mut self.state, &blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Digest::from_sha256(out)
    }

    /// The state as text for a database column: state words, length, pending bytes (hex).
    pub fn to_text(&self) -> String {
        let words: Vec<String> = self.state.iter().map(|w| format!("{w:08x}")).collect();
        format!(
            "{}.{}.{}",
            words.join(""),
            self.len,
            hex::encode(&self.pending)
        )
    }

    pub fn from_text(text: &str) -> Option<ResumableSha256> {
        let mut parts = text.split('.');
        let (words, len, pending) = (parts.next()?, parts.next()?, parts.next()?);
        if words.len() != 64 || parts.next().is_some() {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, w) in state.iter_mut().enumerate() {
            *w = u32::from_str_radix(words.get(i * 8..i * 8 + 8)?, 16).ok()?;
        }
        let len: u64 = len.parse().ok()?;
        let pending = hex::decode(pending).ok()?;
        (pending.len() < 64 && pending.len() as u64 == len % 64).then_some(ResumableSha256 {
            state,
            len,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn matches_sha2_across_any_split_and_a_round_trip_through_text() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let want = hex::encode(sha2::Sha256::digest(&data[..len]));
            for split in [0, 1, 3, 63, 64, 65, 200, len / 2, len] {
                let split = split.min(len);
                let mut h = ResumableSha256::default();
                h.update(&data[..split]);
                let h2 = ResumableSha256::from_text(&h.to_text()).unwrap();
                assert_eq!(h2, h);
                let mut h = h2;
                for piece in data[split..len].chunks(37) {
                    h.update(piece);
                }
                assert_eq!(h.finish().hex(), want, "len {len} split {split}");
            }
        }
        assert!(ResumableSha256::from_text("nonsense").is_none());
    }
}
