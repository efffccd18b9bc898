//! Fixed-size secret byte strings.

use core::fmt;

use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes: zeroized on drop, compared in constant time, never printed.
///
/// This is the building block for every symmetric secret in hush (root keys, chain keys,
/// message keys, storage keys). It deliberately implements neither `Clone` nor `Copy`;
/// a copy must be made explicitly with [`SecretBytes::duplicate`], so that every copy of a
/// secret in the code base is visible.
///
/// ```
/// use hush_crypto::SecretBytes;
/// let a = SecretBytes::<4>::from_bytes([1, 2, 3, 4]);
/// let b = a.duplicate();
/// assert!(a == b);
/// assert!(!format!("{a:?}").contains('1'));
/// ```
pub struct SecretBytes<const N: usize>([u8; N]);

impl<const N: usize> SecretBytes<N> {
    /// Wraps `bytes`. The caller should zeroize its own copy if it keeps one.
    pub const fn from_bytes(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies `N` bytes out of a slice, or `None` if the length differs.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; N] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    /// Fills a new secret from a cryptographic RNG.
    pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; N];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Borrows the secret bytes.
    pub const fn expose(&self) -> &[u8; N] {
        &self.0
    }

    /// An explicit copy of this secret.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }
}

impl SecretBytes<64> {
    /// Splits 64 bytes into its first and second 32-byte halves.
    pub fn split_halves(&self) -> (SecretBytes<32>, SecretBytes<32>) {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&self.0[..32]);
        b.copy_from_slice(&self.0[32..]);
        let halves = (SecretBytes(a), SecretBytes(b));
        a.zeroize();
        b.zeroize();
        halves
    }
}

impl<const N: usize> Zeroize for SecretBytes<N> {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> Drop for SecretBytes<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> ZeroizeOnDrop for SecretBytes<N> {}

impl<const N: usize> ConstantTimeEq for SecretBytes<N> {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl<const N: usize> PartialEq for SecretBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl<const N: usize> Eq for SecretBytes<N> {}

impl<const N: usize> fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes<{N}>(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes() {
        let s = SecretBytes::from_bytes([0xAB; 32]);
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(!d.contains("171"), "{d}");
    }

    #[test]
    fn equality() {
        let a = SecretBytes::from_bytes([7u8; 32]);
        let mut other = [7u8; 32];
        other[31] = 8;
        assert!(a == a.duplicate());
        assert!(a != SecretBytes::from_bytes(other));
    }

    #[test]
    fn split_halves() {
        let mut bytes = [1u8; 64];
        bytes[32..].fill(2);
        let (a, b) = SecretBytes::from_bytes(bytes).split_halves();
        assert_eq!(a.expose(), &[1u8; 32]);
        assert_eq!(b.expose(), &[2u8; 32]);
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(SecretBytes::<32>::from_slice(&[0; 31]).is_none());
        assert!(SecretBytes::<32>::from_slice(&[0; 32]).is_some());
    }
}
