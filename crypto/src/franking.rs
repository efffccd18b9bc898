//! Message franking (SPEC §17): abuse reports that the relay's operator can check, while
//! the relay still reads no message nobody reports (Grubbs, Lu and Ristenpart, CRYPTO 2017;
//! the scheme of Messenger's end-to-end encryption).
//!
//! The sender draws a fresh [`FrankingKey`] per message, sends it to the recipients inside
//! the encrypted content, and gives the relay only the [`commit`]ment to the content under
//! it. The relay binds the commitment to the sender, the recipient and the time with its own
//! key ([`relay_tag`]) and hands that tag to the recipient with the envelope. A recipient
//! checks the commitment against what it decrypted ([`opens`]); to report, it reveals the
//! content and the franking key with the commitment and the tag, and the operator checks
//! both ([`verify_report`]).
//!
//! ```
//! use hush_crypto::franking::{self, FrankingKey, RelayFrankingKey, Stamp};
//!
//! let mut rng = rand::rng();
//! let relay = RelayFrankingKey::generate(&mut rng);
//! let key = FrankingKey::generate(&mut rng);
//! let content = b"an abusive message";
//! let commitment = franking::commit(&key, content);
//! let stamp = Stamp { sender: ("mallory", 1), recipient: ("alice", 2), server_ms: 1_700_000_000_000 };
//! let tag = franking::relay_tag(&relay, &commitment, &stamp);
//! assert!(franking::opens(&key, content, &commitment));
//! assert!(franking::verify_report(&relay, content, &key, &commitment, &tag, &stamp).is_ok());
//! // Another message, or another sender, does not verify.
//! assert!(franking::verify_report(&relay, b"something else", &key, &commitment, &tag, &stamp).is_err());
//! let other = Stamp { sender: ("bob", 1), ..stamp };
//! assert!(franking::verify_report(&relay, content, &key, &commitment, &tag, &other).is_err());
//! ```

use crate::kdf::{hmac_sha256, hmac_sha256_verify};
use crate::labels::{FRANKING_COMMITMENT_CONTEXT, FRANKING_RELAY_CONTEXT};
use crate::secret::SecretBytes;

/// Length of a franking key, a commitment and a relay tag.
pub const TAG_LEN: usize = 32;

/// A message's franking key (`nf`): fresh per message, sent to its recipients inside the
/// encrypted content, revealed to the operator only by a report.
pub struct FrankingKey(SecretBytes<32>);

impl FrankingKey {
    /// A fresh key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// Wraps 32 bytes (received in a content, or in a report).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::from_bytes(bytes))
    }

    /// The key's bytes, to send inside the encrypted content or in a report.
    pub const fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl core::fmt::Debug for FrankingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FrankingKey(..)")
    }
}

/// The relay's franking key (`Kr`): only the relay (and its operator) holds it.
pub struct RelayFrankingKey(SecretBytes<32>);

impl RelayFrankingKey {
    /// A fresh key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SecretBytes::random(rng))
    }

    /// Wraps 32 bytes (kept by the relay).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBytes::from_bytes(bytes))
    }

    /// The key's bytes, to store.
    pub const fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl core::fmt::Debug for RelayFrankingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RelayFrankingKey(..)")
    }
}

/// Who sent a message to whom, and when the relay stored it: what a relay tag binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// The sending device: (user id, device id).
    pub sender: (&'a str, u32),
    /// The receiving device: (user id, device id).
    pub recipient: (&'a str, u32),
    /// The relay's timestamp of the envelope, in ms since the epoch.
    pub server_ms: u64,
}

/// A report that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The content and franking key do not open the commitment.
    #[error("the message does not match its commitment")]
    Commitment,
    /// The relay's tag does not bind the commitment to this sender, recipient and time.
    #[error("the relay's tag does not match")]
    RelayTag,
}

/// The commitment `cf = HMAC-SHA256(nf, "hush franking commitment v1" ‖ content)`.
pub fn commit(key: &FrankingKey, content: &[u8]) -> [u8; TAG_LEN] {
    *hmac_sha256(
        key.expose(),
        &[FRANKING_COMMITMENT_CONTEXT, content].concat(),
    )
    .expose()
}

/// Whether `content` and `key` open `commitment` (compared in constant time).
pub fn opens(key: &FrankingKey, content: &[u8], commitment: &[u8]) -> bool {
    hmac_sha256_verify(
        key.expose(),
        &[FRANKING_COMMITMENT_CONTEXT, content].concat(),
        commitment,
    )
}

fn stamped(commitment: &[u8; TAG_LEN], stamp: &Stamp<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(FRANKING_RELAY_CONTEXT.len() + TAG_LEN + 160);
    m.extend_from_slice(FRANKING_RELAY_CONTEXT);
    m.extend_from_slice(commitment);
    for (user, device) in [stamp.sender, stamp.recipient] {
        let len = u32::try_from(user.len()).unwrap_or(u32::MAX);
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(user.as_bytes());
        m.extend_from_slice(&device.to_be_bytes());
    }
    m.extend_from_slice(&stamp.server_ms.to_be_bytes());
    m
}

/// The relay's tag `rf = HMAC-SHA256(Kr, "hush franking relay v1" ‖ cf ‖ u32be(len(su)) ‖
/// su ‖ u32be(sd) ‖ u32be(len(ru)) ‖ ru ‖ u32be(rd) ‖ u64be(ts))`.
pub fn relay_tag(
    key: &RelayFrankingKey,
    commitment: &[u8; TAG_LEN],
    stamp: &Stamp<'_>,
) -> [u8; TAG_LEN] {
    *hmac_sha256(key.expose(), &stamped(commitment, stamp)).expose()
}

/// Checks a report: the revealed `content` and `key` open `commitment`, and `tag` is the
/// relay's tag of that commitment for `stamp`. Both in constant time.
pub fn verify_report(
    relay: &RelayFrankingKey,
    content: &[u8],
    key: &FrankingKey,
    commitment: &[u8; TAG_LEN],
    tag: &[u8; TAG_LEN],
    stamp: &Stamp<'_>,
) -> Result<(), ReportError> {
    if !opens(key, content, commitment) {
        return Err(ReportError::Commitment);
    }
    if !hmac_sha256_verify(relay.expose(), &stamped(commitment, stamp), tag) {
        return Err(ReportError::RelayTag);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (RelayFrankingKey, FrankingKey, [u8; 32], [u8; 32]) {
        let relay = RelayFrankingKey::from_bytes([1; 32]);
        let key = FrankingKey::from_bytes([2; 32]);
        let cf = commit(&key, b"hello");
        let stamp = Stamp {
            sender: ("mallory", 1),
            recipient: ("alice", 2),
            server_ms: 5,
        };
        let rf = relay_tag(&relay, &cf, &stamp);
        (relay, key, cf, rf)
    }

    /// SPEC §17.4's worked example.
    #[test]
    fn the_worked_example() {
        let cf = commit(&FrankingKey::from_bytes([2; 32]), b"hello");
        assert_eq!(
            hex::encode(cf),
            "bfac88d39d47754b44b6299a1536f989ece46cb89ae660e50df4cb477f459d89"
        );
        let stamp = Stamp {
            sender: ("mallory", 1),
            recipient: ("alice", 2),
            server_ms: 1_700_000_000_000,
        };
        assert_eq!(stamped(&cf, &stamp).len(), 90);
        assert_eq!(
            hex::encode(relay_tag(
                &RelayFrankingKey::from_bytes([1; 32]),
                &cf,
                &stamp
            )),
            "5386c5c82da957c4cb464ce7f8503d985b27a767a6799fade3c5c49f9a68c76a"
        );
    }

    #[test]
    fn every_changed_part_of_a_report_is_refused() {
        let (relay, key, cf, rf) = fixture();
        let stamp = Stamp {
            sender: ("mallory", 1),
            recipient: ("alice", 2),
            server_ms: 5,
        };
        assert_eq!(
            verify_report(&relay, b"hello", &key, &cf, &rf, &stamp),
            Ok(())
        );
        let report = |content: &[u8], key: &FrankingKey, cf: &[u8; 32], rf: &[u8; 32], s| {
            verify_report(&relay, content, key, cf, rf, &s)
        };
        let c = Err(ReportError::Commitment);
        let t = Err(ReportError::RelayTag);
        assert_eq!(report(b"hellO", &key, &cf, &rf, stamp), c);
        assert_eq!(
            report(b"hello", &FrankingKey::from_bytes([3; 32]), &cf, &rf, stamp),
            c
        );
        let mut cf2 = cf;
        cf2[0] ^= 1;
        assert_eq!(report(b"hello", &key, &cf2, &rf, stamp), c);
        let mut rf2 = rf;
        rf2[31] ^= 0x80;
        assert_eq!(report(b"hello", &key, &cf, &rf2, stamp), t);
        for s in [
            Stamp {
                sender: ("mallorz", 1),
                ..stamp
            },
            Stamp {
                sender: ("mallory", 2),
                ..stamp
            },
            Stamp {
                recipient: ("alicf", 2),
                ..stamp
            },
            Stamp {
                recipient: ("alice", 3),
                ..stamp
            },
            Stamp {
                server_ms: 6,
                ..stamp
            },
            // The lengths keep the fields apart: "ab" + "c" is not "a" + "bc".
            Stamp {
                sender: ("mallorya", 1),
                recipient: ("lice", 2),
                ..stamp
            },
        ] {
            assert_eq!(report(b"hello", &key, &cf, &rf, s), t, "{s:?}");
        }
        // A tag under another relay key.
        let other = RelayFrankingKey::from_bytes([9; 32]);
        assert_eq!(
            verify_report(&other, b"hello", &key, &cf, &rf, &stamp),
            Err(ReportError::RelayTag)
        );
        assert!(!format!("{key:?}{relay:?}").contains('2'));
    }
}
