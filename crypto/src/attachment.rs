//! Chunked AEAD for attachments (docs/SPEC.md §15): a file is encrypted under a fresh key in
//! 64 KiB chunks, so memory stays flat whatever its size, and a truncated, reordered or
//! extended ciphertext is refused.
//!
//! ```
//! use hush_crypto::attachment::{self, AttachmentKey};
//!
//! let key = AttachmentKey::generate(&mut rand::rng());
//! let file = vec![7u8; 200_000];
//! let blob = attachment::seal(&key, &file)?;
//! assert_eq!(blob.len(), attachment::sealed_len(file.len() as u64) as usize);
//! assert_eq!(&*attachment::open(&key, &blob)?, &file[..]);
//! // Dropping the last chunk is detected.
//! let cut = &blob[..attachment::SEGMENT];
//! assert!(attachment::open(&key, cut).is_err());
//! # Ok::<(), hush_crypto::attachment::AttachmentError>(())
//! ```

use core::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::SecretBytes;
use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::kdf::hkdf_sha256;

/// Plaintext bytes per chunk; every chunk but the last is exactly this long.
pub const CHUNK: usize = 64 * 1024;
/// Ciphertext bytes per full chunk (chunk and tag).
pub const SEGMENT: usize = CHUNK + TAG_LEN;
/// HKDF info of the chunk key.
pub const ATTACHMENT_INFO: &[u8] = crate::labels::ATTACHMENT_INFO;

/// The attachment could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// A chunk did not authenticate: wrong key, tampering, reordering or truncation.
    #[error("attachment chunk {index} does not authenticate")]
    Chunk {
        /// Index of the failing chunk.
        index: u64,
    },
    /// A non-final chunk of the wrong length, or a chunk after the final one.
    #[error("attachment chunks out of sequence")]
    Sequence,
}

/// The 32-byte key of one attachment, sent to recipients inside an end-to-end message.
pub struct AttachmentKey(SecretBytes<32>);

impl AttachmentKey {
    /// A fresh random key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// Wraps received key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::from_bytes(bytes))
    }

    /// Wraps received key bytes; `None` unless exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        SecretBytes::from_slice(bytes).map(Self)
    }

    /// The key bytes, to put in the attachment pointer.
    pub const fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let k = hkdf_sha256::<32>(&[0u8; 32], self.0.expose(), ATTACHMENT_INFO);
        ChaCha20Poly1305::new(&Key::from(*k.expose()))
    }
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentKey(<redacted>)")
    }
}

/// `nonce_i = u88be(i) ‖ (0x01 if final else 0x00)`.
pub fn chunk_nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Length of the sealed blob for `plaintext_len` bytes.
pub const fn sealed_len(plaintext_len: u64) -> u64 {
    let chunks = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(CHUNK as u64)
    };
    plaintext_len + chunks * TAG_LEN as u64
}

/// Encrypts chunk after chunk.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    index: u64,
    finished: bool,
}

impl Sealer {
    /// Starts sealing under `key`.
    pub fn new(key: &AttachmentKey) -> Self {
        Self {
            cipher: key.cipher(),
            index: 0,
            finished: false,
        }
    }

    /// Seals the next chunk: exactly [`CHUNK`] bytes unless `last`, at most that if `last`.
    pub fn seal_chunk(&mut self, chunk: &[u8], last: bool) -> Result<Vec<u8>, AttachmentError> {
        if self.finished || chunk.len() > CHUNK || (!last && chunk.len() != CHUNK) {
            return Err(AttachmentError::Sequence);
        }
        let nonce = Nonce::from(chunk_nonce(self.index, last));
        let out = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: chunk,
                    aad: &[],
                },
            )
            .map_err(|_| AttachmentError::Chunk { index: self.index })?;
        self.index += 1;
        self.finished = last;
        Ok(out)
    }
}

/// Decrypts segment after segment.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    index: u64,
    finished: bool,
}

impl Opener {
    /// Starts opening under `key`.
    pub fn new(key: &AttachmentKey) -> Self {
        Self {
            cipher: key.cipher(),
            index: 0,
            finished: false,
        }
    }

    /// Opens the next segment: exactly [`SEGMENT`] bytes unless `last`. The caller knows
    /// `last` from the blob's length: the final segment is whatever remains (16 to
    /// [`SEGMENT`] bytes).
    pub fn open_chunk(
        &mut self,
        segment: &[u8],
        last: bool,
    ) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
        if self.finished
            || segment.len() > SEGMENT
            || segment.len() < TAG_LEN
            || (!last && segment.len() != SEGMENT)
        {
            return Err(AttachmentError::Sequence);
        }
        let nonce = Nonce::from(chunk_nonce(self.index, last));
        let out = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: segment,
                    aad: &[],
                },
            )
            .map_err(|_| AttachmentError::Chunk { index: self.index })?;
        self.index += 1;
        self.finished = last;
        Ok(Zeroizing::new(out))
    }

    /// Whether the final segment has been opened.
    pub const fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Seals a whole attachment held in memory (the client streams files instead).
pub fn seal(key: &AttachmentKey, plaintext: &[u8]) -> Result<Vec<u8>, AttachmentError> {
    let mut sealer = Sealer::new(key);
    let mut out = Vec::with_capacity(sealed_len(plaintext.len() as u64) as usize);
    let mut chunks = plaintext.chunks(CHUNK).peekable();
    if chunks.peek().is_none() {
        out.extend(sealer.seal_chunk(&[], true)?);
    }
    while let Some(c) = chunks.next() {
        out.extend(sealer.seal_chunk(c, chunks.peek().is_none())?);
    }
    Ok(out)
}

/// Opens a whole sealed attachment held in memory.
pub fn open(key: &AttachmentKey, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
    let mut opener = Opener::new(key);
    let mut out = Zeroizing::new(Vec::with_capacity(blob.len()));
    if blob.is_empty() {
        return Err(AttachmentError::Sequence);
    }
    let mut segments = blob.chunks(SEGMENT).peekable();
    while let Some(s) = segments.next() {
        out.extend_from_slice(&opener.open_chunk(s, segments.peek().is_none())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_boundaries_and_tampering() {
        let key = AttachmentKey::generate(&mut rand::rng());
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let blob = seal(&key, &p).unwrap();
            assert_eq!(blob.len() as u64, sealed_len(len as u64), "len {len}");
            assert_eq!(&*open(&key, &blob).unwrap(), &p[..]);
            // Any flipped byte fails.
            let mut bad = blob.clone();
            let i = bad.len() / 2;
            bad[i] ^= 1;
            assert!(open(&key, &bad).is_err());
            // Truncation at a segment boundary, and extension, fail.
            if blob.len() > SEGMENT {
                assert!(open(&key, &blob[..SEGMENT]).is_err());
            }
            let mut longer = blob.clone();
            longer.extend_from_slice(&seal(&key, b"x").unwrap());
            assert!(open(&key, &longer).is_err());
        }
        // Swapped chunks fail.
        let p = vec![1u8; 3 * CHUNK];
        let mut blob = seal(&key, &p).unwrap();
        let first: Vec<u8> = blob[..SEGMENT].to_vec();
        let second: Vec<u8> = blob[SEGMENT..2 * SEGMENT].to_vec();
        blob[..SEGMENT].copy_from_slice(&second);
        blob[SEGMENT..2 * SEGMENT].copy_from_slice(&first);
        assert_eq!(open(&key, &blob), Err(AttachmentError::Chunk { index: 0 }));
        // Another key fails.
        let other = AttachmentKey::generate(&mut rand::rng());
        assert!(open(&other, &seal(&key, b"hi").unwrap()).is_err());
        assert!(open(&key, &[]).is_err());
    }

    #[test]
    fn sequence_rules() {
        let key = AttachmentKey::generate(&mut rand::rng());
        let mut s = Sealer::new(&key);
        assert_eq!(
            s.seal_chunk(&[0; 10], false),
            Err(AttachmentError::Sequence)
        );
        s.seal_chunk(&[0; 10], true).unwrap();
        assert_eq!(s.seal_chunk(&[0; 10], true), Err(AttachmentError::Sequence));
        assert_eq!(format!("{key:?}"), "AttachmentKey(<redacted>)");
    }
}
