//! Safety numbers: a fingerprint of two identities that people compare out of band.
//!
//! For each party, with `id` its stable identifier (for example the user id) and `key` its
//! 32-byte identity public key:
//!
//! ```text
//! h_0     = SHA-512(0x00 0x00 ‖ key ‖ id)
//! h_{i+1} = SHA-512(h_i ‖ key)                for i in 0..5200
//! fp      = h_5200[0..32]
//! digits  = for c in 0..6: (big-endian u40 of fp[5c..5c+5]) mod 100000, as 5 decimal digits
//! ```
//!
//! The 60-digit safety number is the two 30-digit strings in ascending order, concatenated.
//! The scannable form (for a QR code) is `0x00 ‖ fp_first ‖ fp_second` (65 bytes), in the
//! same order. Both forms are identical whichever side computes them. The 5200 iterations
//! (as Signal) make a search for a second key with matching digits about 2^12 times costlier.

use core::fmt;

use sha2::{Digest, Sha512};

use crate::identity::IdentityPublicKey;

/// Version of the fingerprint construction, hashed into `h_0` and the scannable form.
pub const SAFETY_NUMBER_VERSION: u16 = 0;
/// SHA-512 iterations per fingerprint.
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;
/// Number of decimal digits in a safety number.
pub const SAFETY_NUMBER_DIGITS: usize = 60;
/// Length of the scannable form.
pub const SCANNABLE_LEN: usize = 1 + 32 + 32;

/// A safety number for a pair of identities.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    scannable: [u8; SCANNABLE_LEN],
}

struct Party {
    digits: String,
    fingerprint: [u8; 32],
}

fn party(id: &[u8], key: &IdentityPublicKey) -> Party {
    let mut h = Sha512::new();
    h.update(SAFETY_NUMBER_VERSION.to_be_bytes());
    h.update(key.as_bytes());
    h.update(id);
    let mut out = h.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(out);
        h.update(key.as_bytes());
        out = h.finalize();
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&out[..32]);
    let mut digits = String::with_capacity(30);
    for chunk in fingerprint[..30].chunks_exact(5) {
        let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        digits.push_str(&format!("{:05}", v % 100_000));
    }
    Party {
        digits,
        fingerprint,
    }
}

impl SafetyNumber {
    /// Computes the safety number of two parties, each given as (stable id, identity key).
    /// The argument order does not matter.
    pub fn compute(a: (&[u8], &IdentityPublicKey), b: (&[u8], &IdentityPublicKey)) -> Self {
        let mut pa = party(a.0, a.1);
        let mut pb = party(b.0, b.1);
        if (pb.digits.as_str(), pb.fingerprint) < (pa.digits.as_str(), pa.fingerprint) {
            core::mem::swap(&mut pa, &mut pb);
        }
        let mut scannable = [0u8; SCANNABLE_LEN];
        scannable[0] = SAFETY_NUMBER_VERSION.to_be_bytes()[1];
        scannable[1..33].copy_from_slice(&pa.fingerprint);
        scannable[33..].copy_from_slice(&pb.fingerprint);
        Self {
            digits: pa.digits + &pb.digits,
            scannable,
        }
    }

    /// The 60 digits, for reading aloud.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits in twelve groups of five, as shown to people.
    pub fn display_groups(&self) -> Vec<&str> {
        (0..SAFETY_NUMBER_DIGITS / 5)
            .map(|i| &self.digits[i * 5..i * 5 + 5])
            .collect()
    }

    /// The compact form for a QR code.
    pub const fn scannable(&self) -> &[u8; SCANNABLE_LEN] {
        &self.scannable
    }

    /// Whether a scanned code matches this safety number.
    pub fn matches_scanned(&self, scanned: &[u8]) -> bool {
        scanned == self.scannable
    }
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_groups().join(" "))
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKeyPair;
    use rand::SeedableRng;

    #[test]
    fn symmetric_and_sensitive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let a = IdentityKeyPair::generate(&mut rng);
        let b = IdentityKeyPair::generate(&mut rng);
        let c = IdentityKeyPair::generate(&mut rng);
        let ab = SafetyNumber::compute((b"alice", a.public()), (b"bob", b.public()));
        let ba = SafetyNumber::compute((b"bob", b.public()), (b"alice", a.public()));
        assert_eq!(ab, ba);
        assert_eq!(ab.digits().len(), SAFETY_NUMBER_DIGITS);
        assert!(ab.digits().bytes().all(|d| d.is_ascii_digit()));
        assert_eq!(ab.display_groups().len(), 12);
        assert!(ab.matches_scanned(ba.scannable()));
        let ac = SafetyNumber::compute((b"alice", a.public()), (b"bob", c.public()));
        assert_ne!(ab.digits(), ac.digits());
        assert!(!ab.matches_scanned(ac.scannable()));
        let renamed = SafetyNumber::compute((b"alicia", a.public()), (b"bob", b.public()));
        assert_ne!(ab.digits(), renamed.digits());
    }
}
