//! Every label of the hush protocol, in one place (docs/SPEC.md §4).
//!
//! Labels are ASCII byte strings with no terminator. Each one separates one use of a key or
//! a KDF from every other, so no two entries here may be equal or one a prefix of another
//! where both prefix the same kind of input (a unit test checks that they are distinct).
//! Sessions, groups, the relay protocol, the client and the test vectors all take their
//! labels from here; a change to one is a change to the SPEC and the vectors.

/// HKDF `info` of the X3DH shared secret (SPEC §6).
pub const X3DH_INFO: &[u8] = b"hush X3DH v1";
/// HKDF `info` of the PQXDH shared secret: X3DH's four DH outputs and an ML-KEM-768 secret
/// (SPEC §6.2).
pub const PQXDH_INFO: &[u8] = b"hush PQXDH X25519 ML-KEM-768 v1";
/// HKDF `info` of the root KDF (SPEC §7).
pub const ROOT_INFO: &[u8] = b"hush root v1";
/// HKDF `info` of the root KDF when the step mixes in a post-quantum ratchet epoch's secret
/// (SPEC §7.8.4).
pub const ROOT_PQ_INFO: &[u8] = b"hush root PQ ratchet ML-KEM-768 v1";
/// HKDF `info` expanding a one-to-one message key into an AEAD key and nonce (SPEC §7).
pub const MESSAGE_INFO: &[u8] = b"hush message v1";
/// Prefix of what an identity key signs to certify a signed prekey (SPEC §5.1).
pub const SIGNED_PREKEY_CONTEXT: &[u8] = b"hush signed prekey v1";
/// Prefix of what an identity key signs to certify a signed prekey that promises a KEM prekey
/// beside it: a bundle that carries it without one was stripped (SPEC §5.1).
pub const PQ_SIGNED_PREKEY_CONTEXT: &[u8] = b"hush signed prekey PQXDH v1";
/// Prefix of what an identity key signs to certify an ML-KEM-768 prekey (SPEC §5.3).
pub const KEM_PREKEY_CONTEXT: &[u8] = b"hush KEM prekey ML-KEM-768 v1";
/// HKDF `info` prefix of a sealing key; the record's label follows it (SPEC §11.1).
pub const SEAL_INFO: &[u8] = b"hush seal v1";
/// Prefix of what a group sender chain's key signs (SPEC §13.3).
pub const GROUP_MESSAGE_SIGNATURE_CONTEXT: &[u8] = b"hush group message v1";
/// HKDF `info` expanding a group message key into an AEAD key and nonce (SPEC §13.2).
pub const GROUP_KEYS_INFO: &[u8] = b"hush group keys v1";
/// Prefix of what the signer of a group control message signs (SPEC §13.5).
pub const GROUP_CONTROL_SIGNATURE_CONTEXT: &[u8] = b"hush group control v1";
/// Prefix of what the signer of a group info signs (SPEC §13.6).
pub const GROUP_INFO_SIGNATURE_CONTEXT: &[u8] = b"hush group info v1";
/// Prefix of what a device signs to authenticate to a relay (SPEC §14.1).
pub const RELAY_AUTH_CONTEXT: &[u8] = b"hush relay auth v1";
/// Prefix of what an existing device signs to link a new device (SPEC §14.1).
pub const RELAY_LINK_CONTEXT: &[u8] = b"hush relay link v1";
/// Prefix of the digest of a user's device list that a send checks at the relay
/// (SPEC §14.2).
pub const DEVICE_LIST_CONTEXT: &[u8] = b"hush device list v1";
/// Prefix of what a reply's message id is hashed from (SPEC §16.2, "Replies").
pub const REPLY_ID_CONTEXT: &[u8] = b"hush reply id v1";
/// Prefix of what a message's franking commitment is computed over (SPEC §17).
pub const FRANKING_COMMITMENT_CONTEXT: &[u8] = b"hush franking commitment v1";
/// Prefix of what the relay's franking tag is computed over (SPEC §17).
pub const FRANKING_RELAY_CONTEXT: &[u8] = b"hush franking relay v1";
/// HKDF `info` of an attachment's chunk key (SPEC §15.1).
pub const ATTACHMENT_INFO: &[u8] = b"hush attachment v1";

/// Sealing labels of the client's on-device records (SPEC §16.8), appended to
/// [`SEAL_INFO`].
pub mod client_record {
    /// The identity seed.
    pub const IDENTITY: &[u8] = b"hush client identity";
    /// A signed prekey's private key and signature.
    pub const SIGNED_PREKEY: &[u8] = b"hush client signed prekey";
    /// A one-time prekey's private key.
    pub const ONE_TIME_PREKEY: &[u8] = b"hush client one-time prekey";
    /// A KEM prekey's flags, seed and signature (one-time or last-resort).
    pub const KEM_PREKEY: &[u8] = b"hush client KEM prekey";
    /// A session state.
    pub const SESSION: &[u8] = b"hush client session";
    /// A group record.
    pub const GROUP: &[u8] = b"hush client group";
    /// An outbox draft.
    pub const DRAFT: &[u8] = b"hush client draft";
    /// An encrypted outbox entry ready to send.
    pub const READY: &[u8] = b"hush client ready";
    /// A history entry.
    pub const MESSAGE: &[u8] = b"hush client message";
    /// A group message or sender key held until the group change it needs arrives.
    pub const HELD: &[u8] = b"hush client held";
}

/// Every label above, for checks that they stay distinct.
pub const ALL: &[&[u8]] = &[
    X3DH_INFO,
    PQXDH_INFO,
    ROOT_INFO,
    ROOT_PQ_INFO,
    MESSAGE_INFO,
    SIGNED_PREKEY_CONTEXT,
    PQ_SIGNED_PREKEY_CONTEXT,
    KEM_PREKEY_CONTEXT,
    SEAL_INFO,
    GROUP_MESSAGE_SIGNATURE_CONTEXT,
    GROUP_KEYS_INFO,
    GROUP_CONTROL_SIGNATURE_CONTEXT,
    GROUP_INFO_SIGNATURE_CONTEXT,
    RELAY_AUTH_CONTEXT,
    RELAY_LINK_CONTEXT,
    DEVICE_LIST_CONTEXT,
    REPLY_ID_CONTEXT,
    FRANKING_COMMITMENT_CONTEXT,
    FRANKING_RELAY_CONTEXT,
    ATTACHMENT_INFO,
    client_record::IDENTITY,
    client_record::SIGNED_PREKEY,
    client_record::ONE_TIME_PREKEY,
    client_record::KEM_PREKEY,
    client_record::SESSION,
    client_record::GROUP,
    client_record::DRAFT,
    client_record::READY,
    client_record::MESSAGE,
    client_record::HELD,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_ascii_and_none_prefixes_another() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.is_ascii() && !a.is_empty());
            for b in &ALL[i + 1..] {
                assert_ne!(a, b);
                assert!(!a.starts_with(b) && !b.starts_with(a), "{a:?} / {b:?}");
            }
        }
    }
}
