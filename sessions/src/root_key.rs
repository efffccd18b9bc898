//! The root key and the root KDF (Signal's KDF_RK).

use hush_crypto::kdf::hkdf_sha256;
use hush_crypto::{SecretBytes, SharedSecret, Zeroizing};

use crate::chain_key::ChainKey;

/// HKDF info for the root KDF.
pub const ROOT_INFO: &[u8] = hush_crypto::labels::ROOT_INFO;

/// HKDF info for the root KDF when it mixes in a post-quantum epoch secret.
pub const ROOT_PQ_INFO: &[u8] = hush_crypto::labels::ROOT_PQ_INFO;

/// The root key RK.
pub(crate) struct RootKey(SecretBytes<32>);

impl RootKey {
    pub(crate) const fn new(key: SecretBytes<32>) -> Self {
        Self(key)
    }

    pub(crate) const fn expose(&self) -> &SecretBytes<32> {
        &self.0
    }

    /// `RK' ‖ CK = HKDF-SHA256(salt = RK, ikm = dh, info = "hush root v1")`, 64 bytes.
    pub(crate) fn advance(&self, dh: &SharedSecret) -> (RootKey, ChainKey) {
        let okm = hkdf_sha256::<64>(self.0.expose(), dh.expose(), ROOT_INFO);
        let (rk, ck) = okm.split_halves();
        (RootKey(rk), ChainKey::new(ck, 0))
    }

    /// [`RootKey::advance`], mixing in a post-quantum epoch secret when there is one:
    /// `RK' ‖ CK = HKDF-SHA256(salt = RK, ikm = dh ‖ secret, info = "hush root PQ ratchet
    /// ML-KEM-768 v1")`.
    pub(crate) fn advance_pq(
        &self,
        dh: &SharedSecret,
        pq: Option<&SecretBytes<32>>,
    ) -> (RootKey, ChainKey) {
        let Some(pq) = pq else {
            return self.advance(dh);
        };
        let mut ikm = Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(dh.expose());
        ikm[32..].copy_from_slice(pq.expose());
        let okm = hkdf_sha256::<64>(self.0.expose(), &ikm[..], ROOT_PQ_INFO);
        let (rk, ck) = okm.split_halves();
        (RootKey(rk), ChainKey::new(ck, 0))
    }
}
