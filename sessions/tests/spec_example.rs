//! The worked example of docs/SPEC.md, recomputed from the specification's formulas with
//! hush-crypto primitives, checked against what `Session` actually produces, and checked to
//! appear verbatim in docs/SPEC.md. Run with `SPEC_EXAMPLE_PRINT=1 cargo test -p hush-sessions
//! --test spec_example -- --nocapture` to print the example.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use hush_crypto::kdf::{chain_step, hkdf_sha256};
use hush_crypto::x25519::x25519;
use hush_crypto::{
    IdentityKeyPair, MessageKeys, SafetyNumber, SecretBytes, StorageKey, X25519KeyPair,
    X25519PublicKey,
};
use hush_sessions::bundle::signed_prekey_message;
use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};

/// An "RNG" that returns preset 32-byte values in order, so the example is reproducible.
struct Scripted(Vec<[u8; 32]>);

impl rand_core::TryRng for Scripted {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unimplemented!()
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unimplemented!()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert_eq!(dst.len(), 32);
        dst.copy_from_slice(&self.0.remove(0));
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Scripted {}

fn pattern(start: u8) -> [u8; 32] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Example(Vec<(String, String)>);

impl Example {
    fn add(&mut self, name: &str, bytes: &[u8]) {
        self.0.push((name.to_string(), hex(bytes)));
    }
}

fn kdf_rk(rk: &[u8; 32], dh: &[u8; 32]) -> (SecretBytes<32>, SecretBytes<32>) {
    hkdf_sha256::<64>(rk, dh, b"hush root v1").split_halves()
}

fn build() -> Example {
    let mut ex = Example(vec![]);
    let alice = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0x00)));
    let bob = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0x20)));
    ex.add("IK_A seed", &pattern(0x00));
    ex.add("IK_A (Ed25519)", alice.public().as_bytes());
    ex.add("IK_A (X25519)", alice.public().to_x25519().as_bytes());
    ex.add("IK_B seed", &pattern(0x20));
    ex.add("IK_B (Ed25519)", bob.public().as_bytes());
    ex.add("IK_B (X25519)", bob.public().to_x25519().as_bytes());

    // Bob's prekeys: signed prekey 1 and one-time prekey 2.
    let spk = SignedPrekey::generate(1, &bob, &mut Scripted(vec![pattern(0x40)]));
    let opk = OneTimePrekey::generate(2, &mut Scripted(vec![pattern(0x60)]));
    ex.add("SPK_B private", &pattern(0x40));
    ex.add("SPK_B", spk.public_key().as_bytes());
    ex.add(
        "SPK_B signed message",
        &signed_prekey_message(1, spk.public_key()),
    );
    ex.add("SPK_B signature", spk.signature().as_bytes());
    ex.add("OPK_B private", &pattern(0x60));
    ex.add("OPK_B", opk.public_key().as_bytes());
    let bundle = PrekeyBundle::new(bob.public(), &spk, Some(&opk));
    ex.add("bundle", &bundle.to_bytes());

    // X3DH, from the formulas.
    let ek = X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(pattern(0x80)));
    let ra = X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(pattern(0xa0)));
    ex.add("EK_A private", &pattern(0x80));
    ex.add("EK_A", ek.public().as_bytes());
    let dh1 = alice.diffie_hellman(spk.public_key()).unwrap();
    let dh2 = ek.diffie_hellman(bob.public().to_x25519()).unwrap();
    let dh3 = ek.diffie_hellman(spk.public_key()).unwrap();
    let dh4 = ek.diffie_hellman(opk.public_key()).unwrap();
    for (n, dh) in [("DH1", &dh1), ("DH2", &dh2), ("DH3", &dh3), ("DH4", &dh4)] {
        ex.add(n, dh.expose());
    }
    let mut ikm = vec![0xff; 32];
    for dh in [&dh1, &dh2, &dh3, &dh4] {
        ikm.extend_from_slice(dh.expose());
    }
    let sk = hkdf_sha256::<32>(&[0; 32], &ikm, b"hush X3DH v1");
    ex.add("SK", sk.expose());
    let mut ad = alice.public().as_bytes().to_vec();
    ad.extend_from_slice(bob.public().as_bytes());
    ex.add("AD", &ad);

    // Alice's first ratchet step against SPK_B, then her first message key.
    ex.add("DHs_A private", &pattern(0xa0));
    ex.add("DHs_A", ra.public().as_bytes());
    let dh_a = ra.diffie_hellman(spk.public_key()).unwrap();
    ex.add("DH(DHs_A, SPK_B)", dh_a.expose());
    let (rk1, cks_a) = kdf_rk(sk.expose(), dh_a.expose());
    ex.add("RK_1", rk1.expose());
    ex.add("CKs_A,0", cks_a.expose());
    let (mk0, cks_a1) = chain_step(&cks_a);
    ex.add("MK_A,0", mk0.expose());
    ex.add("CKs_A,1", cks_a1.expose());
    let keys = MessageKeys::derive(&mk0, b"hush message v1");
    ex.add("MK_A,0 AEAD key", keys.key());
    ex.add("MK_A,0 AEAD nonce", keys.nonce());
    let mut header = vec![0x08, 0x01, 0x12, 0x20];
    header.extend_from_slice(ra.public().as_bytes()); // PN = 0 and N = 0 are omitted
    ex.add("header A0", &header);
    let mut full_ad = ad.clone();
    full_ad.extend_from_slice(&header);
    let ct = keys.seal(&full_ad, b"hello Bob").unwrap();
    ex.add("ciphertext A0", &ct);

    // The real session must produce exactly these bytes.
    let mut rng = Scripted(vec![pattern(0x80), pattern(0xa0)]);
    let mut alice_session = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let m0 = alice_session.encrypt(b"hello Bob").unwrap();
    let SessionMessage::Prekey(pm) = &m0 else {
        panic!()
    };
    assert_eq!(pm.message().header_bytes(), header.as_slice());
    assert_eq!(pm.message().ciphertext(), ct.as_slice());
    ex.add("wire A0 (SessionMessage.prekey)", &m0.to_bytes());

    // Bob accepts; his new ratchet key is 0xc0.., and he replies.
    let rb = X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(pattern(0xc0)));
    let (rk2, cks_b) = kdf_rk(
        rk1.expose(),
        rb.diffie_hellman(ra.public()).unwrap().expose(),
    );
    ex.add("DHs_B private", &pattern(0xc0));
    ex.add("DHs_B", rb.public().as_bytes());
    ex.add("RK_2", rk2.expose());
    ex.add("CKs_B,0", cks_b.expose());
    let (mkb0, _) = chain_step(&cks_b);
    let keys_b = MessageKeys::derive(&mkb0, b"hush message v1");
    ex.add("MK_B,0", mkb0.expose());
    let mut header_b = vec![0x08, 0x01, 0x12, 0x20];
    header_b.extend_from_slice(rb.public().as_bytes());
    ex.add("header B0", &header_b);
    let mut ad_b = ad.clone();
    ad_b.extend_from_slice(&header_b);
    let ct_b = keys_b.seal(&ad_b, b"hi Alice").unwrap();
    let (mut bob_session, pt) = Session::accept(
        &bob,
        &spk,
        Some(&opk),
        pm,
        None,
        &mut Scripted(vec![pattern(0xc0)]),
    )
    .unwrap();
    assert_eq!(pt, b"hello Bob");
    let m1 = bob_session.encrypt(b"hi Alice").unwrap();
    assert_eq!(m1.ratchet_message().ciphertext(), ct_b.as_slice());
    ex.add("ciphertext B0", &ct_b);
    ex.add("wire B0 (SessionMessage.ratchet)", &m1.to_bytes());

    // Sealing, with a fixed salt.
    let storage = StorageKey::from_bytes(pattern(0xe0));
    let sealed = storage
        .seal_with_salt(b"session", b"example state", &pattern(0x10))
        .unwrap();
    ex.add("storage key", &pattern(0xe0));
    ex.add("sealed \"example state\" (salt 10..2f)", &sealed);

    // Safety number.
    let sn = SafetyNumber::compute((b"alice", alice.public()), (b"bob", bob.public()));
    ex.0.push(("safety number (alice, bob)".into(), sn.to_string()));
    ex.add("safety number scannable", sn.scannable());
    // Independent check of X25519 on raw bytes.
    let again = x25519(
        &SecretBytes::from_bytes(pattern(0x40)),
        &X25519PublicKey::from_bytes(*alice.public().to_x25519().as_bytes()),
    )
    .unwrap();
    assert_eq!(again.expose(), dh1.expose());
    ex
}

/// Prints the example if asked, and checks that every value appears in docs/SPEC.md.
fn assert_in_spec(ex: &Example) {
    if std::env::var_os("SPEC_EXAMPLE_PRINT").is_some() {
        for (name, value) in &ex.0 {
            println!("{name:<38} {value}");
        }
    }
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SPEC.md")).unwrap();
    let flat: String = spec.split_whitespace().collect();
    for (name, value) in &ex.0 {
        let v: String = value.split_whitespace().collect();
        assert!(
            flat.contains(&v),
            "docs/SPEC.md lacks the value of {name}: {value}"
        );
    }
}

#[test]
fn worked_example_matches_spec() {
    assert_in_spec(&build());
}

/// GF(2^8) multiplication modulo 0x11d by shift and add (SPEC §7.8.3), independent of the
/// implementation's tables.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1d;
        }
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    (1..=255u8).find(|&b| gf_mul(a, b) == 1).unwrap()
}

/// Chunk `x` by the formula of SPEC §7.8.3.
fn chunk_by_formula(payload: &[u8], x: u8) -> Vec<u8> {
    let k = payload.len().div_ceil(104);
    let mut padded = payload.to_vec();
    padded.resize(k * 104, 0);
    (0..104)
        .map(|p| {
            let mut acc = 0u8;
            for j in 0..k {
                let mut l = 1u8;
                for m in (0..k).filter(|&m| m != j) {
                    l = gf_mul(l, gf_mul(x ^ m as u8, gf_inv(j as u8 ^ m as u8)));
                }
                acc ^= gf_mul(padded[j * 104 + p], l);
            }
            acc
        })
        .collect()
}

/// SPEC §12.2: the post-quantum ratchet's root KDF, erasure code and header part.
fn build_pq() -> Example {
    let mut ex = Example(vec![]);
    let (rk, dh, ss) = (pattern(0x00), pattern(0x20), pattern(0x40));
    let mut ikm = dh.to_vec();
    ikm.extend_from_slice(&ss);
    let (rk2, ck) =
        hkdf_sha256::<64>(&rk, &ikm, b"hush root PQ ratchet ML-KEM-768 v1").split_halves();
    ex.add("KDF_RK_PQ RK'", rk2.expose());
    ex.add("KDF_RK_PQ CK", ck.expose());
    let payload: Vec<u8> = (0..1184).map(|i| (i % 251) as u8).collect();
    for x in [11u8, 12, 255] {
        let c = hush_sessions::pq_ratchet::encode_chunk(&payload, x);
        assert_eq!(c.to_vec(), chunk_by_formula(&payload, x), "chunk {x}");
        ex.add(&format!("chunk {x}"), &c);
    }
    let header = hush_sessions::Header {
        ratchet_key: X25519PublicKey::from_bytes(pattern(0x60)),
        previous_chain_length: 0,
        message_number: 5,
        pq: Some(hush_sessions::PqHeader {
            epoch: 3,
            mixed: 2,
            chunk: Some(hush_sessions::Chunk {
                index: 12,
                data: hush_sessions::pq_ratchet::encode_chunk(&payload, 12),
            }),
        }),
    };
    let bytes = header.encode();
    // The pq part is the header's tail: 2a 70, then the PqHeader's 112 bytes.
    ex.add("header pq part (first 10 bytes)", &bytes[38..48]);
    assert_eq!(bytes.len(), 38 + 2 + 112);
    ex
}

#[test]
fn post_quantum_example_matches_spec() {
    assert_in_spec(&build_pq());
}
