//! The worked example of docs/SPEC.md §13, recomputed from the specification's formulas with
//! hush-crypto primitives, checked against what `Group` produces, and checked to appear in
//! docs/SPEC.md. Print it with `SPEC_EXAMPLE_PRINT=1 cargo test -p hush-groups --test
//! spec_example -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use hush_crypto::hash::sha256;
use hush_crypto::kdf::chain_step;
use hush_crypto::{IdentityKeyPair, MessageKeys, SecretBytes, SigningKeyPair};
use hush_groups::{Group, GroupConfig, Role};

/// Serves preset bytes in order, for any request size.
struct Scripted(Vec<u8>);

impl rand_core::TryRng for Scripted {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(self.0.len() >= dst.len(), "script exhausted");
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
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

/// A protobuf length-delimited field with a one-byte key: key, varint length, bytes.
fn ld(key: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![key];
    let mut n = bytes.len();
    while n >= 0x80 {
        v.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v.extend_from_slice(bytes);
    v
}

#[test]
fn worked_example_matches_spec() {
    let mut ex: Vec<(String, String)> = vec![];
    let mut add = |n: &str, b: &[u8]| ex.push((n.to_string(), hex(b)));
    let alice = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0x00)));
    let bob = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0x20)));
    let carol = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0x40)));
    let group_id = pattern(0x90);
    add("group id", &group_id);
    add("Alice (admin)", alice.public().as_bytes());
    add("Bob", bob.public().as_bytes());
    add("Carol", carol.public().as_bytes());

    // Create: members sorted by key bytes; Alice admin, Bob member.
    let (mut a, create) = Group::create(
        &alice,
        &[(*bob.public(), Role::Member)],
        GroupConfig::default(),
        &mut Scripted(group_id.to_vec()),
    )
    .unwrap();
    let member = |k: &IdentityKeyPair, admin: bool| {
        let mut m = ld(0x0a, k.public().as_bytes());
        if admin {
            m.extend_from_slice(&[0x10, 0x01]);
        }
        m
    };
    let mut members = [
        (alice.public().to_bytes(), member(&alice, true)),
        (bob.public().to_bytes(), member(&bob, false)),
    ];
    members.sort();
    let create_body: Vec<u8> = members.iter().flat_map(|(_, m)| ld(0x0a, m)).collect();
    let mut content = vec![0x08, 0x01];
    content.extend(ld(0x12, &group_id));
    content.extend(ld(0x22, &[0u8; 32])); // epoch 0 is omitted; parent = 32 zero bytes
    content.extend(ld(0x2a, alice.public().as_bytes()));
    content.extend(ld(0x32, &create_body));
    let mut signed = b"hush group control v1".to_vec();
    signed.extend_from_slice(&content);
    let sig = alice.sign(&signed);
    let mut expected_create = ld(0x0a, &content);
    expected_create.extend(ld(0x12, sig.as_bytes()));
    assert_eq!(create, expected_create);
    let head0 = sha256(&[&content]);
    assert_eq!(a.membership().head(), &head0);
    add("create control", &create);
    add("digest(create) = head at epoch 0", &head0);
    let mut b = Group::from_create(bob.public(), &create, GroupConfig::default()).unwrap();

    // Alice's first send: chain id 0x01020304, chain key a0.., signing seed c0...
    let mut script = 0x0102_0304u32.to_le_bytes().to_vec();
    script.extend_from_slice(&pattern(0xa0));
    script.extend_from_slice(&pattern(0xc0));
    let sent = a.encrypt(b"hello group", 0, &mut Scripted(script)).unwrap();
    let signing = SigningKeyPair::from_seed(&SecretBytes::from_bytes(pattern(0xc0)));
    add(
        "chain signing key (seed c0..df)",
        signing.public().as_bytes(),
    );
    let mut dist = vec![0x08, 0x01];
    dist.extend(ld(0x12, &group_id));
    dist.extend_from_slice(&[0x20, 0x84, 0x86, 0x88, 0x08]); // chain_id 0x01020304 as a varint
    dist.extend(ld(0x32, &pattern(0xa0)));
    dist.extend(ld(0x3a, signing.public().as_bytes()));
    assert_eq!(sent.distribution.as_deref().unwrap(), dist.as_slice());
    add("distribution", &dist);
    let (mk, ck1) = chain_step(&SecretBytes::from_bytes(pattern(0xa0)));
    add("MK_0", mk.expose());
    add("CK_1", ck1.expose());
    let keys = MessageKeys::derive(&mk, b"hush group keys v1");
    add("AEAD key", keys.key());
    add("AEAD nonce", keys.nonce());
    let mut ad = group_id.to_vec();
    ad.extend_from_slice(alice.public().as_bytes());
    ad.extend_from_slice(&0u64.to_be_bytes());
    ad.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    ad.extend_from_slice(&0u32.to_be_bytes());
    add("AD", &ad);
    let ct = keys.seal(&ad, b"hello group").unwrap();
    add("ciphertext", &ct);
    let mut mcontent = vec![0x08, 0x01];
    mcontent.extend(ld(0x12, &group_id));
    mcontent.extend(ld(0x1a, alice.public().as_bytes()));
    mcontent.extend_from_slice(&[0x28, 0x84, 0x86, 0x88, 0x08]); // epoch 0 and iteration 0 omitted
    mcontent.extend(ld(0x3a, &ct));
    let mut to_sign = b"hush group message v1".to_vec();
    to_sign.extend_from_slice(&mcontent);
    let msig = signing.sign(&to_sign);
    let mut expected_msg = ld(0x0a, &mcontent);
    expected_msg.extend(ld(0x12, msig.as_bytes()));
    assert_eq!(sent.message, expected_msg);
    add("group message", &sent.message);
    b.process_distribution(alice.public(), &dist).unwrap();
    assert_eq!(b.decrypt(&sent.message).unwrap().plaintext, b"hello group");

    // Alice adds Carol (epoch 1).
    let (add_ctrl, _info) = a.add(&alice, carol.public(), Role::Member).unwrap();
    let mut c1 = vec![0x08, 0x01];
    c1.extend(ld(0x12, &group_id));
    c1.extend_from_slice(&[0x18, 0x01]);
    c1.extend(ld(0x22, &head0));
    c1.extend(ld(0x2a, alice.public().as_bytes()));
    c1.extend(ld(0x3a, &ld(0x0a, carol.public().as_bytes())));
    let mut s1 = b"hush group control v1".to_vec();
    s1.extend_from_slice(&c1);
    let mut expected_add = ld(0x0a, &c1);
    expected_add.extend(ld(0x12, alice.sign(&s1).as_bytes()));
    assert_eq!(add_ctrl, expected_add);
    add("add Carol control (epoch 1)", &add_ctrl);
    add("digest(add) = head at epoch 1", &sha256(&[&c1]));
    b.apply(&add_ctrl).unwrap();
    assert_eq!(b.membership().head(), &sha256(&[&c1]));

    if std::env::var_os("SPEC_EXAMPLE_PRINT").is_some() {
        for (n, v) in &ex {
            println!("{n:<38} {v}");
        }
    }
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SPEC.md")).unwrap();
    let flat: String = spec.split_whitespace().collect();
    for (n, v) in &ex {
        assert!(
            flat.contains(v.as_str()),
            "docs/SPEC.md lacks the value of {n}: {v}"
        );
    }
}
