//! The digest of a user's device list (docs/SPEC.md §14.2). A device that sends with a
//! device list it remembers names the list by this digest; the relay refuses the send
//! with `STALE_DEVICES` if the user's devices have changed since, so the sender lists them
//! again instead of asking before every message.

use hush_crypto::hash::sha256;
use hush_crypto::labels::DEVICE_LIST_CONTEXT;

/// Length of a device list digest.
pub const DIGEST_LEN: usize = 32;

/// `SHA-256("hush device list v1" ‖ u32be(len) ‖ user_id ‖ u32be(n) ‖ (u32be(device_id) ‖
/// u32be(len) ‖ identity_key) for each device in ascending device id)`, over the devices
/// as the relay lists them (`Devices`). The order `devices` come in does not matter.
pub fn digest<K: AsRef<[u8]>>(user_id: &str, devices: &[(u32, K)]) -> [u8; DIGEST_LEN] {
    let mut sorted: Vec<(u32, &[u8])> = devices.iter().map(|(d, k)| (*d, k.as_ref())).collect();
    sorted.sort_by_key(|(d, _)| *d);
    let mut m =
        Vec::with_capacity(DEVICE_LIST_CONTEXT.len() + 8 + user_id.len() + 40 * sorted.len());
    m.extend_from_slice(DEVICE_LIST_CONTEXT);
    push_lv(&mut m, user_id.as_bytes());
    m.extend_from_slice(&len32(sorted.len()).to_be_bytes());
    for (device, key) in sorted {
        m.extend_from_slice(&device.to_be_bytes());
        push_lv(&mut m, key);
    }
    sha256(&[&m])
}

fn len32(n: usize) -> u32 {
    // Bounded far below 4 GiB by the frame size limit.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn push_lv(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_of_the_sorted_list_and_binds_every_field() {
        let a = [(1u32, [1u8; 32]), (2, [2; 32])];
        let b = [(2u32, [2u8; 32]), (1, [1; 32])];
        assert_eq!(digest("alice", &a), digest("alice", &b));
        assert_ne!(digest("alice", &a), digest("bob", &a));
        assert_ne!(digest("alice", &a), digest("alice", &a[..1]));
        assert_ne!(
            digest("alice", &a),
            digest("alice", &[(1u32, [1u8; 32]), (3, [2; 32])])
        );
        assert_ne!(
            digest("alice", &a),
            digest("alice", &[(1u32, [1u8; 32]), (2, [3; 32])])
        );
        let none: [(u32, [u8; 32]); 0] = [];
        assert_ne!(digest("alice", &none), digest("alice", &a));
    }

    /// The worked example of SPEC §14.2 (computed independently with Python's hashlib when
    /// it was written), and the SPEC still quotes it.
    #[test]
    fn the_spec_example() {
        let d = digest("alice", &[(2u32, [0x22u8; 32]), (1, [0x11; 32])]);
        assert_eq!(hex(&d), SPEC_EXAMPLE);
        let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SPEC.md");
        // Absent only when built from the packaged crate alone.
        if let Ok(text) = std::fs::read_to_string(spec) {
            assert!(
                text.contains(SPEC_EXAMPLE),
                "SPEC §14.2 quotes another digest"
            );
        }
    }

    const SPEC_EXAMPLE: &str = "f642dafcbc48b936133af3aec8de6096d3886d93712b2b2cad64a1db731000dd";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
