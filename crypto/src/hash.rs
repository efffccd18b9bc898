//! SHA-256, for digests of public data (for example group control messages).

use sha2::{Digest, Sha256};

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Incremental SHA-256, for data that arrives in pieces (streamed uploads).
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything added.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl core::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sha256Stream")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_matches_one_shot() {
        let mut h = super::Sha256Stream::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), super::sha256(&[b"abc"]));
    }

    #[test]
    fn fips_180_abc() {
        assert_eq!(
            hex::encode(super::sha256(&[b"a", b"bc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
