//! The exact bytes that devices sign for the relay (docs/SPEC.md §5.1 and §14.1). Every
//! variable-length field is prefixed with its length (`u32be`), so no two distinct inputs
//! give the same bytes.

use hush_crypto::labels::{
    KEM_PREKEY_CONTEXT, PQ_SIGNED_PREKEY_CONTEXT, RELAY_AUTH_CONTEXT, RELAY_LINK_CONTEXT,
    SIGNED_PREKEY_CONTEXT,
};

fn push_lv(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every field here is bounded far below 4 GiB by the frame size limit.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What a device signs to authenticate:
/// `"hush relay auth v1" ‖ u32be(len) ‖ relay_id ‖ nonce ‖ u32be(len) ‖ user_id ‖
/// u32be(device_id) ‖ identity_key`.
pub fn auth_message(
    relay_id: &[u8],
    nonce: &[u8],
    user: &str,
    device: u32,
    identity_key: &[u8],
) -> Vec<u8> {
    let mut m = RELAY_AUTH_CONTEXT.to_vec();
    push_lv(&mut m, relay_id);
    m.extend_from_slice(nonce);
    push_lv(&mut m, user.as_bytes());
    m.extend_from_slice(&device.to_be_bytes());
    m.extend_from_slice(identity_key);
    m
}

/// What an existing device signs to vouch for a new device (or a new identity key) of the
/// same user: `"hush relay link v1" ‖ u32be(len) ‖ user_id ‖ u32be(device_id) ‖
/// identity_key`.
pub fn link_message(user: &str, device: u32, identity_key: &[u8]) -> Vec<u8> {
    let mut m = RELAY_LINK_CONTEXT.to_vec();
    push_lv(&mut m, user.as_bytes());
    m.extend_from_slice(&device.to_be_bytes());
    m.extend_from_slice(identity_key);
    m
}

/// What an identity key signs to certify signed prekey `id`:
/// `"hush signed prekey v1" ‖ u32be(id) ‖ key` (SPEC §5.1; the same bytes as
/// `hush_sessions::signed_prekey_message`).
pub fn signed_prekey_message(id: u32, key: &[u8]) -> Vec<u8> {
    let mut m = SIGNED_PREKEY_CONTEXT.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key);
    m
}

/// What an identity key signs to certify a post-quantum signed prekey `id`, one that promises
/// a KEM prekey in every bundle: `"hush signed prekey PQXDH v1" ‖ u32be(id) ‖ key` (SPEC §5.1).
pub fn pq_signed_prekey_message(id: u32, key: &[u8]) -> Vec<u8> {
    let mut m = PQ_SIGNED_PREKEY_CONTEXT.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key);
    m
}

/// What an identity key signs to certify KEM prekey `id`:
/// `"hush KEM prekey ML-KEM-768 v1" ‖ u32be(id) ‖ key` (SPEC §5.3).
pub fn kem_prekey_message(id: u32, key: &[u8]) -> Vec<u8> {
    let mut m = KEM_PREKEY_CONTEXT.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_inputs_are_length_prefixed() {
        // ("ab", 1) and ("a", ...) can never produce the same bytes.
        assert_ne!(
            auth_message(b"r", &[0; 32], "ab", 1, &[1; 32]),
            auth_message(b"r", &[0; 32], "a", 1, &[1; 32])
        );
        assert_eq!(signed_prekey_message(1, &[2; 32]).len(), 21 + 4 + 32);
    }

    #[test]
    fn auth_message_bytes_match_the_spec() {
        // SPEC §14.1, written out by hand.
        let mut expected = b"hush relay auth v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"id");
        expected.extend_from_slice(&[9; 32]);
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"alice");
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(&[4; 32]);
        assert_eq!(
            auth_message(b"id", &[9; 32], "alice", 3, &[4; 32]),
            expected
        );

        let mut link = b"hush relay link v1".to_vec();
        link.extend_from_slice(&[0, 0, 0, 3]);
        link.extend_from_slice(b"bob");
        link.extend_from_slice(&[0, 0, 0, 2]);
        link.extend_from_slice(&[5; 32]);
        assert_eq!(link_message("bob", 2, &[5; 32]), link);
    }
}
