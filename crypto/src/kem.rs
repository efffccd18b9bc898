//! ML-KEM-768 (FIPS 203), the post-quantum key encapsulation of PQXDH.
//!
//! A key pair is kept as its 64-byte **seed** `d ‖ z` (FIPS 203 §6.1,
//! `ML-KEM.KeyGen_internal(d, z)`): the smallest form of the private key, and the one
//! FIPS 203 recommends storing; the expanded decapsulation key is derived from it when the
//! pair is loaded. Public keys are the 1,184-byte encapsulation keys of FIPS 203, checked on
//! parsing (§7.2: every coefficient below q); ciphertexts are 1,088 bytes. Decapsulation of
//! a well-formed ciphertext never fails: a ciphertext that was not made for the key gives
//! an unrelated secret (implicit rejection), so the failure shows later, when a key derived
//! from it does not open anything.
//!
//! The implementation is Cryspen's `libcrux-ml-kem`: pure Rust, formally verified for
//! correctness and secret independence (constant time), with portable code for
//! `wasm32-unknown-unknown` and AVX2 code chosen at run time on x86-64 (docs/BENCHMARKS.md
//! says why it was chosen over RustCrypto's `ml-kem`: 2 to 5 times faster here).
//!
//! ```
//! use hush_crypto::kem::{KemKeyPair, KemPublicKey, KemCiphertext};
//!
//! let mut rng = rand::rng();
//! let bob = KemKeyPair::generate(&mut rng);
//! // Bob publishes his public key; Alice parses it and encapsulates a secret to it.
//! let published = bob.public().to_bytes();
//! let bob_public = KemPublicKey::from_slice(&published)?;
//! let (ciphertext, alice_secret) = bob_public.encapsulate(&mut rng);
//! // Bob decapsulates the ciphertext Alice sent.
//! let received = KemCiphertext::from_slice(ciphertext.as_bytes())?;
//! let bob_secret = bob.decapsulate(&received);
//! assert!(alice_secret.expose() == bob_secret.expose());
//! # Ok::<(), hush_crypto::KemError>(())
//! ```

use core::fmt;

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use rand_core::CryptoRng;
use zeroize::Zeroize;

use crate::SecretBytes;
use crate::error::KemError;

/// Length in bytes of an ML-KEM-768 public (encapsulation) key.
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// Length in bytes of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Length in bytes of an ML-KEM key pair's seed `d ‖ z`.
pub const KEM_SEED_LEN: usize = 64;
/// Length in bytes of an ML-KEM shared secret.
pub const KEM_SHARED_SECRET_LEN: usize = 32;

/// An ML-KEM-768 public (encapsulation) key, checked to be well formed.
#[derive(Clone)]
pub struct KemPublicKey(Box<MlKem768PublicKey>);

impl KemPublicKey {
    /// Parses a 1,184-byte encapsulation key. Refused: another length
    /// ([`KemError::InvalidLength`]), or a coefficient not below q, so that the bytes are not
    /// the canonical encoding of a key (FIPS 203 §7.2 "modulus check",
    /// [`KemError::InvalidKey`]).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KemError> {
        let key = MlKem768PublicKey::try_from(bytes).map_err(|_| KemError::InvalidLength)?;
        if !mlkem768::validate_public_key(&key) {
            return Err(KemError::InvalidKey);
        }
        Ok(Self(Box::new(key)))
    }

    /// The 1,184-byte encoding.
    pub fn as_bytes(&self) -> &[u8; KEM_PUBLIC_KEY_LEN] {
        self.0.as_slice()
    }

    /// The 1,184-byte encoding, copied.
    pub fn to_bytes(&self) -> [u8; KEM_PUBLIC_KEY_LEN] {
        *self.0.as_slice()
    }

    /// Encapsulates a fresh secret to this key: the ciphertext to send, and the secret.
    pub fn encapsulate<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> (KemCiphertext, KemSharedSecret) {
        let m = SecretBytes::<32>::random(rng);
        let (ct, mut k) = mlkem768::encapsulate(&self.0, *m.expose());
        let secret = KemSharedSecret(SecretBytes::from_bytes(k));
        k.zeroize();
        (KemCiphertext(Box::new(ct.into())), secret)
    }
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}

impl Eq for KemPublicKey {}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole key is long; its first bytes tell keys apart in logs.
        write!(f, "KemPublicKey(")?;
        crate::fmt_hex(f, &self.0.as_slice()[..8])?;
        write!(f, "…)")
    }
}

/// An ML-KEM-768 ciphertext (1,088 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct KemCiphertext(Box<[u8; KEM_CIPHERTEXT_LEN]>);

impl KemCiphertext {
    /// Copies a ciphertext out of a slice of exactly 1,088 bytes. Every such string is a
    /// ciphertext (decapsulating a wrong one gives an unrelated secret).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KemError> {
        let array: [u8; KEM_CIPHERTEXT_LEN] =
            bytes.try_into().map_err(|_| KemError::InvalidLength)?;
        Ok(Self(Box::new(array)))
    }

    /// The 1,088-byte encoding.
    pub fn as_bytes(&self) -> &[u8; KEM_CIPHERTEXT_LEN] {
        &self.0
    }
}

impl fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemCiphertext(")?;
        crate::fmt_hex(f, &self.0[..8])?;
        write!(f, "…)")
    }
}

/// The 32-byte secret an encapsulation agrees on. Zeroized on drop, never printed.
pub struct KemSharedSecret(SecretBytes<KEM_SHARED_SECRET_LEN>);

impl KemSharedSecret {
    /// The secret as [`SecretBytes`], moved (no copy left behind).
    pub fn into_secret_bytes(self) -> SecretBytes<KEM_SHARED_SECRET_LEN> {
        self.0
    }

    /// The 32 shared bytes.
    pub const fn expose(&self) -> &[u8; KEM_SHARED_SECRET_LEN] {
        self.0.expose()
    }
}

impl fmt::Debug for KemSharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KemSharedSecret(redacted)")
    }
}

/// The expanded decapsulation key, zeroized on drop (libcrux's type does not zeroize).
struct DecapsulationKey(Box<MlKem768PrivateKey>);

impl Drop for DecapsulationKey {
    fn drop(&mut self) {
        let mut bytes: [u8; 2400] = core::mem::take(&mut *self.0).into();
        bytes.zeroize();
    }
}

/// An ML-KEM-768 key pair, kept as its seed; the decapsulation key is expanded once, when
/// the pair is made or loaded. Zeroized on drop (seed and expanded key), never printed, and
/// neither `Clone` nor `Copy`.
pub struct KemKeyPair {
    seed: SecretBytes<KEM_SEED_LEN>,
    key: DecapsulationKey,
    public: KemPublicKey,
}

impl KemKeyPair {
    /// A new key pair from 64 random bytes.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_seed(SecretBytes::random(rng))
    }

    /// The key pair of a seed `d ‖ z` (FIPS 203 `ML-KEM.KeyGen_internal(d, z)`), taken by
    /// value: the pair keeps it.
    pub fn from_seed(seed: SecretBytes<KEM_SEED_LEN>) -> Self {
        let (private, public) = mlkem768::generate_key_pair(*seed.expose()).into_parts();
        Self {
            seed,
            key: DecapsulationKey(Box::new(private)),
            public: KemPublicKey(Box::new(public)),
        }
    }

    /// The seed to store (the whole private key).
    pub const fn seed(&self) -> &SecretBytes<KEM_SEED_LEN> {
        &self.seed
    }

    /// The public key.
    pub const fn public(&self) -> &KemPublicKey {
        &self.public
    }

    /// The secret `ciphertext` carries to this key (an unrelated one if it was not made
    /// for this key: implicit rejection).
    pub fn decapsulate(&self, ciphertext: &KemCiphertext) -> KemSharedSecret {
        let ct = MlKem768Ciphertext::from(&*ciphertext.0);
        let mut k = mlkem768::decapsulate(&self.key.0, &ct);
        let secret = KemSharedSecret(SecretBytes::from_bytes(k));
        k.zeroize();
        secret
    }
}

impl fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let mut rng = rand::rng();
        let pair = KemKeyPair::generate(&mut rng);
        let (ct, secret) = pair.public().encapsulate(&mut rng);
        let seed_hex: String = pair.seed().expose()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!format!("{pair:?}").contains(&seed_hex));
        assert_eq!(format!("{secret:?}"), "KemSharedSecret(redacted)");
        assert!(format!("{ct:?}").starts_with("KemCiphertext("));
    }

    #[test]
    fn a_pair_round_trips_through_its_seed_and_encodings() {
        let mut rng = rand::rng();
        let pair = KemKeyPair::generate(&mut rng);
        let again = KemKeyPair::from_seed(pair.seed().duplicate());
        assert_eq!(again.public(), pair.public());
        let public = KemPublicKey::from_slice(&pair.public().to_bytes()).unwrap();
        let (ct, sent) = public.encapsulate(&mut rng);
        let ct = KemCiphertext::from_slice(ct.as_bytes()).unwrap();
        assert!(again.decapsulate(&ct).expose() == sent.expose());
        // Another key pair gets an unrelated secret (implicit rejection), not an error.
        let other = KemKeyPair::generate(&mut rng);
        assert!(other.decapsulate(&ct).expose() != sent.expose());
    }

    #[test]
    fn bad_lengths_and_non_canonical_keys_are_refused() {
        let pair = KemKeyPair::generate(&mut rand::rng());
        let bytes = pair.public().to_bytes();
        assert_eq!(
            KemPublicKey::from_slice(&bytes[..KEM_PUBLIC_KEY_LEN - 1]),
            Err(KemError::InvalidLength)
        );
        assert_eq!(
            KemCiphertext::from_slice(&[0; KEM_CIPHERTEXT_LEN + 1]),
            Err(KemError::InvalidLength)
        );
        // The first coefficient set to 4095 (≥ q = 3329): not a canonical encoding.
        let mut bad = bytes;
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert_eq!(KemPublicKey::from_slice(&bad), Err(KemError::InvalidKey));
    }
}
