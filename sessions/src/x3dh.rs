//! X3DH key agreement (Signal's specification, with Ed25519 identities in their X25519 form),
//! and PQXDH (Signal's revision 3), which adds an ML-KEM-768 secret `SS` to the same input.
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B)
//! SK  = HKDF-SHA256(salt = 32 × 0x00, ikm = 32 × 0xFF ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4],
//!                   info = "hush X3DH v1"), 32 bytes
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)                        PQXDH only
//! SK  = HKDF-SHA256(salt = 32 × 0x00, ikm = 32 × 0xFF ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
//!                   info = "hush PQXDH X25519 ML-KEM-768 v1"), 32 bytes
//! AD  = Encode(IK_A) ‖ Encode(IK_B)      (Encode = the 32-byte Ed25519 public key)
//! ```

use hush_crypto::kdf::hkdf_sha256;
use hush_crypto::kem::KemSharedSecret;
use hush_crypto::{
    DhError, EphemeralKeyPair, IdentityKeyPair, IdentityPublicKey, SecretBytes, SharedSecret,
    X25519KeyPair, X25519PublicKey, Zeroizing,
};

/// HKDF info for the X3DH shared secret.
pub const X3DH_INFO: &[u8] = hush_crypto::labels::X3DH_INFO;

/// HKDF info for the PQXDH shared secret.
pub const PQXDH_INFO: &[u8] = hush_crypto::labels::PQXDH_INFO;

/// Length of the X3DH associated data.
pub const AD_LEN: usize = 64;

fn derive(dhs: &[&SharedSecret], kem: Option<&KemSharedSecret>) -> SecretBytes<32> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 2)));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.expose());
    }
    match kem {
        None => hkdf_sha256(&[0u8; 32], &ikm, X3DH_INFO),
        Some(ss) => {
            ikm.extend_from_slice(ss.expose());
            hkdf_sha256(&[0u8; 32], &ikm, PQXDH_INFO)
        }
    }
}

/// The initiator's (Alice's) side. Consumes the ephemeral key.
pub(crate) fn initiator(
    ik_a: &IdentityKeyPair,
    ek_a: EphemeralKeyPair,
    ik_b: &IdentityPublicKey,
    spk_b: &X25519PublicKey,
    opk_b: Option<&X25519PublicKey>,
    kem: Option<&KemSharedSecret>,
) -> Result<SecretBytes<32>, DhError> {
    let dh1 = ik_a.diffie_hellman(spk_b)?;
    let mut peers = vec![ik_b.to_x25519(), spk_b];
    peers.extend(opk_b);
    let rest = ek_a.agree(&peers)?;
    let mut all = vec![&dh1];
    all.extend(rest.iter());
    Ok(derive(&all, kem))
}

/// The responder's (Bob's) side.
pub(crate) fn responder(
    ik_b: &IdentityKeyPair,
    spk_b: &X25519KeyPair,
    opk_b: Option<&X25519KeyPair>,
    ik_a: &IdentityPublicKey,
    ek_a: &X25519PublicKey,
    kem: Option<&KemSharedSecret>,
) -> Result<SecretBytes<32>, DhError> {
    let dh1 = spk_b.diffie_hellman(ik_a.to_x25519())?;
    let dh2 = ik_b.diffie_hellman(ek_a)?;
    let dh3 = spk_b.diffie_hellman(ek_a)?;
    let dh4 = opk_b.map(|opk| opk.diffie_hellman(ek_a)).transpose()?;
    let mut all = vec![&dh1, &dh2, &dh3];
    all.extend(dh4.as_ref());
    Ok(derive(&all, kem))
}

/// `AD = Encode(IK_A) ‖ Encode(IK_B)`.
pub(crate) fn associated_data(ik_a: &IdentityPublicKey, ik_b: &IdentityPublicKey) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[..32].copy_from_slice(ik_a.as_bytes());
    ad[32..].copy_from_slice(ik_b.as_bytes());
    ad
}
