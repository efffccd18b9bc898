//! Session transcripts: real `Session`s driven by scripted randomness, beside a model built
//! from the specification's formulas that records every intermediate key. The generator
//! runs a built-in script; the verifier replays the file's events (and the file's bytes for
//! refused messages) and compares every recorded value.

use hush_crypto::kdf::{chain_step, hkdf_sha256};
use hush_crypto::{
    IdentityKeyPair, MessageKeys, SecretBytes, StorageKey, X25519KeyPair, X25519PublicKey,
};
use hush_sessions::limits::{MAX_MESSAGE_GAP, MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS};
use hush_sessions::{
    AcceptError, DecryptError, Header, OneTimePrekey, PrekeyBundle, Session, SessionMessage,
    SignedPrekey,
};
use serde_json::{Value, json};

use crate::util::{
    Report, Scripted, VectorError, arr32, bytes, gen_err, h, list, num, pattern, seeded, text,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Alice,
    Bob,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Alice => "alice",
            Who::Bob => "bob",
        }
    }
    fn parse(s: &str) -> Result<Self, VectorError> {
        match s {
            "alice" => Ok(Who::Alice),
            "bob" => Ok(Who::Bob),
            _ => Err(VectorError::Field(format!("unknown party {s}"))),
        }
    }
}

/// How the generator makes the bytes of a refused message.
enum Craft {
    TamperCiphertext(usize),
    TamperHeader(usize),
    OtherAd,
    Replay(usize),
    GapOverLimit,
    WrongSession(usize),
}

enum WireSource {
    Given(Vec<u8>),
    Craft(Craft),
}

enum Step {
    Send(Who, Vec<u8>),
    Receive(Who, usize),
    Reject(Who, WireSource, String),
    Restore(Who, [u8; 32]),
}

struct Inputs {
    alice_seed: [u8; 32],
    bob_seed: [u8; 32],
    spk_id: u32,
    spk_private: [u8; 32],
    opk: Option<(u32, [u8; 32])>,
    alice_random: Vec<[u8; 32]>,
    bob_random: Vec<[u8; 32]>,
    storage_key: [u8; 32],
}

/// The specification's ratchet, computed with hush-crypto primitives.
struct Model {
    ad: [u8; 64],
    rk: [u8; 32],
    dhs: X25519KeyPair,
    cks: [u8; 32],
    ns: u32,
    pn: u32,
    chains: Vec<([u8; 32], [u8; 32], u32)>,
    skipped: Vec<([u8; 32], u32, [u8; 32])>,
    random: Vec<[u8; 32]>,
    drawn: usize,
}

fn kdf_rk(rk: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let (a, b) = hkdf_sha256::<64>(rk, dh, hush_sessions::ROOT_INFO).split_halves();
    (*a.expose(), *b.expose())
}

fn kdf_ck(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let (mk, next) = chain_step(&SecretBytes::from_bytes(*ck));
    (*mk.expose(), *next.expose())
}

fn dh(k: &X25519KeyPair, p: &[u8; 32]) -> Result<[u8; 32], VectorError> {
    Ok(*k
        .diffie_hellman(&X25519PublicKey::from_bytes(*p))
        .map_err(gen_err)?
        .expose())
}

fn pair(secret: &[u8; 32]) -> X25519KeyPair {
    X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(*secret))
}

impl Model {
    fn draw(&mut self) -> [u8; 32] {
        let v = self.random.get(self.drawn).copied().unwrap_or([0; 32]);
        self.drawn += 1;
        v
    }

    /// Derives keys `from..to` of a chain, returning them and the chain key at `to`.
    fn skip(ck: [u8; 32], from: u32, to: u32) -> (Vec<(u32, [u8; 32])>, [u8; 32]) {
        let mut keys = vec![];
        let mut ck = ck;
        for n in from..to {
            let (mk, next) = kdf_ck(&ck);
            keys.push((n, mk));
            ck = next;
        }
        (keys, ck)
    }

    fn store(&mut self, key: [u8; 32], keys: Vec<(u32, [u8; 32])>) {
        for (n, mk) in keys {
            self.skipped.push((key, n, mk));
        }
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.remove(0);
        }
    }

    /// The message key for `header`, updating the model as a successful receipt would, and
    /// the ratchet-step record if there was one.
    fn receive(&mut self, header: &Header) -> Result<([u8; 32], Value), VectorError> {
        let their = *header.ratchet_key.as_bytes();
        let n = header.message_number;
        if let Some(i) = self.chains.iter().position(|c| c.0 == their) {
            let (_, ck, nr) = self.chains[i];
            if n < nr {
                let pos = self
                    .skipped
                    .iter()
                    .position(|s| s.0 == their && s.1 == n)
                    .ok_or_else(|| gen_err("no skipped key"))?;
                return Ok((self.skipped.remove(pos).2, Value::Null));
            }
            let (keys, at) = Self::skip(ck, nr, n);
            let (mk, next) = kdf_ck(&at);
            self.chains[i] = (their, next, n + 1);
            self.store(their, keys);
            return Ok((mk, Value::Null));
        }
        if let Some(pos) = self.skipped.iter().position(|s| s.0 == their && s.1 == n) {
            return Ok((self.skipped.remove(pos).2, Value::Null));
        }
        let mut previous_skipped = 0;
        if let Some(last) = self.chains.last().copied()
            && header.previous_chain_length > last.2
        {
            let (keys, at) = Self::skip(last.1, last.2, header.previous_chain_length);
            previous_skipped = keys.len();
            let len = self.chains.len();
            self.chains[len - 1] = (last.0, at, header.previous_chain_length);
            self.store(last.0, keys);
        }
        let rk_before = self.rk;
        let dh_r = dh(&self.dhs, &their)?;
        let (rk_mid, ckr) = kdf_rk(&self.rk, &dh_r);
        let (keys, at) = Self::skip(ckr, 0, n);
        let (mk, next) = kdf_ck(&at);
        let new = pair(&self.draw());
        let dh_s = dh(&new, &their)?;
        let (rk_after, cks) = kdf_rk(&rk_mid, &dh_s);
        self.chains.push((their, next, n + 1));
        if self.chains.len() > MAX_RECEIVER_CHAINS {
            self.chains.remove(0);
        }
        self.store(their, keys);
        self.rk = rk_after;
        self.pn = self.ns;
        self.ns = 0;
        self.cks = cks;
        let step = json!({
            "previous_chain_skipped": previous_skipped,
            "dh_receiving": h(&dh_r), "root_key_before": h(&rk_before), "root_key_mid": h(&rk_mid),
            "receiving_chain_key": h(&ckr), "new_ratchet_key": h(new.public().as_bytes()),
            "dh_sending": h(&dh_s), "root_key_after": h(&rk_after), "sending_chain_key": h(&cks),
        });
        self.dhs = new;
        Ok((mk, step))
    }
}

fn error_class(e: &DecryptError) -> &'static str {
    match e {
        DecryptError::Decode(_) => "Decode",
        DecryptError::Duplicate => "Duplicate",
        DecryptError::TooFarAhead { .. } => "TooFarAhead",
        DecryptError::Authentication => "Authentication",
        DecryptError::WrongSession => "WrongSession",
        DecryptError::InvalidRatchetKey(_) => "InvalidRatchetKey",
        _ => "Other",
    }
}

struct Run {
    events: Vec<Value>,
    x3dh: Value,
    bundle: Vec<u8>,
    alice_used: usize,
    bob_used: usize,
}

/// Runs a transcript. Returns the recorded events.
fn run(inp: &Inputs, steps: Vec<Step>) -> Result<Run, VectorError> {
    let alice_id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.alice_seed));
    let bob_id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.bob_seed));
    let spk = SignedPrekey::generate(
        inp.spk_id,
        &bob_id,
        &mut Scripted::new(&[inp.spk_private.to_vec()]),
    );
    let opk = inp
        .opk
        .map(|(id, k)| OneTimePrekey::from_secret_bytes(id, &SecretBytes::from_bytes(k)));
    let bundle = PrekeyBundle::new(bob_id.public(), &spk, opk.as_ref());
    let to_vecs = |v: &[[u8; 32]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    let mut alice_rng = Scripted::new(&to_vecs(&inp.alice_random));
    let mut bob_rng = Scripted::new(&to_vecs(&inp.bob_random));
    let mut alice = Session::initiate(&alice_id, &bundle, None, &mut alice_rng).map_err(gen_err)?;
    let mut bob: Option<Session> = None;

    // The model of X3DH and the initial step, from the formulas.
    let ek = pair(
        inp.alice_random
            .first()
            .ok_or_else(|| gen_err("alice_random is empty"))?,
    );
    let ra = pair(
        inp.alice_random
            .get(1)
            .ok_or_else(|| gen_err("alice_random has one value"))?,
    );
    let mut ikm = vec![0xff; 32];
    ikm.extend_from_slice(&dh(
        &pair(alice_id.x25519_secret().expose()),
        spk.public_key().as_bytes(),
    )?);
    ikm.extend_from_slice(&dh(&ek, bob_id.public().to_x25519().as_bytes())?);
    ikm.extend_from_slice(&dh(&ek, spk.public_key().as_bytes())?);
    if let Some(o) = &opk {
        ikm.extend_from_slice(&dh(&ek, o.public_key().as_bytes())?);
    }
    let sk = *hkdf_sha256::<32>(&[0; 32], &ikm, hush_sessions::x3dh::X3DH_INFO).expose();
    let mut ad = [0u8; 64];
    ad[..32].copy_from_slice(alice_id.public().as_bytes());
    ad[32..].copy_from_slice(bob_id.public().as_bytes());
    let dh0 = dh(&ra, spk.public_key().as_bytes())?;
    let (rk0, cks0) = kdf_rk(&sk, &dh0);
    let x3dh = json!({"sk": h(&sk), "ad": h(&ad), "dh": h(&dh0), "root_key": h(&rk0), "sending_chain_key": h(&cks0)});
    let mut ma = Model {
        ad,
        rk: rk0,
        dhs: ra,
        cks: cks0,
        ns: 0,
        pn: 0,
        chains: vec![],
        skipped: vec![],
        random: inp.alice_random.clone(),
        drawn: 2,
    };
    let mut mb = Model {
        ad,
        rk: sk,
        dhs: pair(&inp.spk_private),
        cks: [0; 32],
        ns: 0,
        pn: 0,
        chains: vec![],
        skipped: vec![],
        random: inp.bob_random.clone(),
        drawn: 0,
    };

    let mut sent: Vec<(Vec<u8>, Vec<u8>, Header)> = vec![];
    let mut events = vec![];
    let storage = StorageKey::from_bytes(inp.storage_key);
    for step in steps {
        match step {
            Step::Send(from, plaintext) => {
                let (session, model) = match from {
                    Who::Alice => (&mut alice, &mut ma),
                    Who::Bob => (
                        bob.as_mut().ok_or_else(|| gen_err("bob has no session"))?,
                        &mut mb,
                    ),
                };
                let ck = model.cks;
                let (mk, next) = kdf_ck(&ck);
                let header = Header {
                    ratchet_key: *model.dhs.public(),
                    previous_chain_length: model.pn,
                    message_number: model.ns,
                    pq: None,
                };
                let hbytes = header.encode();
                let mut full_ad = model.ad.to_vec();
                full_ad.extend_from_slice(&hbytes);
                let keys =
                    MessageKeys::derive(&SecretBytes::from_bytes(mk), hush_sessions::MESSAGE_INFO);
                let ct = keys.seal(&full_ad, &plaintext).map_err(gen_err)?;
                model.cks = next;
                model.ns += 1;
                let wire = session.encrypt(&plaintext).map_err(gen_err)?.to_bytes();
                events.push(json!({
                    "type": "send", "from": from.name(), "index": sent.len(), "plaintext": h(&plaintext),
                    "ratchet_key": h(header.ratchet_key.as_bytes()), "pn": header.previous_chain_length, "n": header.message_number,
                    "chain_key": h(&ck), "message_key": h(&mk), "aead_key": h(keys.key()), "aead_nonce": h(keys.nonce()),
                    "header": h(&hbytes), "ad": h(&full_ad), "ciphertext": h(&ct), "wire": h(&wire),
                }));
                sent.push((wire, plaintext, header));
            }
            Step::Receive(to, index) => {
                let (wire, _, header) = sent
                    .get(index)
                    .ok_or_else(|| gen_err("no such message"))?
                    .clone();
                let plaintext = match (to, bob.as_mut()) {
                    (Who::Alice, _) => alice
                        .decrypt_bytes(&wire, &mut alice_rng)
                        .map_err(gen_err)?,
                    (Who::Bob, Some(s)) => s.decrypt_bytes(&wire, &mut bob_rng).map_err(gen_err)?,
                    (Who::Bob, None) => {
                        let SessionMessage::Prekey(p) =
                            SessionMessage::from_bytes(&wire).map_err(gen_err)?
                        else {
                            return Err(gen_err("bob's first message is not a prekey message"));
                        };
                        let (s, pt) =
                            Session::accept(&bob_id, &spk, opk.as_ref(), &p, None, &mut bob_rng)
                                .map_err(|e: AcceptError| gen_err(e))?;
                        bob = Some(s);
                        pt
                    }
                };
                let model = if to == Who::Alice { &mut ma } else { &mut mb };
                let (mk, step) = model.receive(&header)?;
                let keys =
                    MessageKeys::derive(&SecretBytes::from_bytes(mk), hush_sessions::MESSAGE_INFO);
                let mut full_ad = model.ad.to_vec();
                full_ad.extend_from_slice(&header.encode());
                let model_pt = SessionMessage::from_bytes(&wire)
                    .ok()
                    .and_then(|m| keys.open(&full_ad, m.ratchet_message().ciphertext()).ok());
                if model_pt.as_deref() != Some(plaintext.as_slice()) {
                    return Err(gen_err(format!(
                        "model and session disagree on message {index}"
                    )));
                }
                let skipped_after = match to {
                    Who::Alice => alice.skipped_keys(),
                    Who::Bob => bob.as_ref().map_or(0, Session::skipped_keys),
                };
                if skipped_after != model.skipped.len() {
                    return Err(gen_err(format!(
                        "model and session disagree on skipped keys after {index}"
                    )));
                }
                events.push(json!({
                    "type": "receive", "to": to.name(), "message": index, "plaintext": h(&plaintext),
                    "ratchet_step": step, "skipped_keys_after": skipped_after,
                }));
            }
            Step::Reject(to, source, note) => {
                let wire = match source {
                    WireSource::Given(b) => b,
                    WireSource::Craft(c) => craft(c, &sent, to, &ma, &mb)?,
                };
                let session = match to {
                    Who::Alice => &mut alice,
                    Who::Bob => bob.as_mut().ok_or_else(|| gen_err("bob has no session"))?,
                };
                let before = session.to_bytes();
                let rng = if to == Who::Alice {
                    &mut alice_rng
                } else {
                    &mut bob_rng
                };
                let error = match session.decrypt_bytes(&wire, rng) {
                    Ok(_) => "accepted",
                    Err(e) if *before != *session.to_bytes() => {
                        let _ = e;
                        "StateChanged"
                    }
                    Err(e) => error_class(&e),
                };
                events.push(json!({"type": "reject", "to": to.name(), "wire": h(&wire), "error": error, "note": note}));
            }
            Step::Restore(party, salt) => {
                let session = match party {
                    Who::Alice => &mut alice,
                    Who::Bob => bob.as_mut().ok_or_else(|| gen_err("bob has no session"))?,
                };
                let sealed = storage
                    .seal_with_salt(b"session", &session.to_bytes(), &salt)
                    .map_err(gen_err)?;
                *session = Session::unseal(&storage, &sealed).map_err(gen_err)?;
                events.push(json!({"type": "restore", "party": party.name(), "salt": h(&salt), "sealed_state": h(&sealed)}));
            }
        }
    }
    Ok(Run {
        events,
        x3dh,
        bundle: bundle.to_bytes(),
        alice_used: alice_rng.used() / 32,
        bob_used: bob_rng.used() / 32,
    })
}

fn craft(
    c: Craft,
    sent: &[(Vec<u8>, Vec<u8>, Header)],
    to: Who,
    ma: &Model,
    mb: &Model,
) -> Result<Vec<u8>, VectorError> {
    let get = |i: usize| {
        sent.get(i)
            .cloned()
            .ok_or_else(|| gen_err("no such message"))
    };
    Ok(match c {
        Craft::TamperCiphertext(i) => {
            let mut w = get(i)?.0;
            let last = w.len() - 1;
            w[last] ^= 0x01;
            w
        }
        Craft::TamperHeader(i) => {
            // Flip a bit of the ratchet key inside the header (byte 10 of the header bytes).
            let (w, _, header) = get(i)?;
            let hb = header.encode();
            let pos = w
                .windows(hb.len())
                .position(|x| x == hb.as_slice())
                .ok_or_else(|| gen_err("header not found"))?;
            let mut w = w;
            w[pos + 10] ^= 0x04;
            w
        }
        Craft::Replay(i) => get(i)?.0,
        Craft::OtherAd => {
            // The sender's next message key, under an AD with another initiator identity.
            let m = if to == Who::Bob { ma } else { mb };
            let (mk, _) = kdf_ck(&m.cks);
            let header = Header {
                ratchet_key: *m.dhs.public(),
                previous_chain_length: m.pn,
                message_number: m.ns,
                pq: None,
            };
            let hb = header.encode();
            let mut ad = m.ad.to_vec();
            ad[..32].copy_from_slice(&pattern(0x55));
            ad.extend_from_slice(&hb);
            let keys =
                MessageKeys::derive(&SecretBytes::from_bytes(mk), hush_sessions::MESSAGE_INFO);
            let ct = keys
                .seal(&ad, b"encrypted under another AD")
                .map_err(gen_err)?;
            crate::wire::encode(
                "SessionMessage",
                &json!({"ratchet": {"header": h(&hb), "ciphertext": h(&ct)}}),
            )?
        }
        Craft::GapOverLimit => {
            // A header MAX_MESSAGE_GAP + 1 ahead on the receiver's current chain.
            let m = if to == Who::Bob { mb } else { ma };
            let (key, _, nr) = m
                .chains
                .last()
                .copied()
                .ok_or_else(|| gen_err("no receiving chain"))?;
            let header = Header {
                ratchet_key: X25519PublicKey::from_bytes(key),
                previous_chain_length: 0,
                message_number: nr + MAX_MESSAGE_GAP + 1,
                pq: None,
            };
            crate::wire::encode(
                "SessionMessage",
                &json!({"ratchet": {"header": h(&header.encode()), "ciphertext": h(&[0u8; 20])}}),
            )?
        }
        Craft::WrongSession(i) => {
            // The same prekey message, claiming another one-time prekey id.
            let w = get(i)?.0;
            let SessionMessage::Prekey(_) = SessionMessage::from_bytes(&w).map_err(gen_err)? else {
                return Err(gen_err("not a prekey message"));
            };
            let pos = w
                .windows(2)
                .position(|x| x[0] == 0x28)
                .ok_or_else(|| gen_err("no one-time prekey id"))?;
            let mut w = w;
            w[pos + 1] ^= 0x01;
            w
        }
    })
}

fn script_full() -> Vec<Step> {
    use Step::*;
    use Who::*;
    let t = |s: &str| s.as_bytes().to_vec();
    let r = |to, c, note: &str| Reject(to, WireSource::Craft(c), note.to_string());
    vec![
        Send(Alice, t("hello Bob")),
        Send(Alice, t("are you there?")),
        Receive(Bob, 0),
        r(
            Bob,
            Craft::WrongSession(1),
            "a prekey message claiming another one-time prekey",
        ),
        Receive(Bob, 1),
        r(Bob, Craft::Replay(1), "replay"),
        Send(Bob, t("hi Alice")),
        Send(Bob, t("yes")),
        Send(Bob, t("here")),
        Receive(Alice, 4),
        Receive(Alice, 2),
        r(
            Alice,
            Craft::Replay(2),
            "replay of a message that used a skipped key",
        ),
        Restore(Alice, seeded("salt alice")),
        Send(Alice, t("five")),
        Send(Alice, t("six")),
        Send(Alice, t("seven")),
        r(Bob, Craft::TamperCiphertext(6), "tampered ciphertext"),
        Receive(Bob, 6),
        r(Bob, Craft::TamperHeader(7), "tampered header (ratchet key)"),
        r(
            Bob,
            Craft::OtherAd,
            "the right message key under another AD",
        ),
        Receive(Bob, 5),
        Receive(Bob, 7),
        Receive(Alice, 3),
        r(
            Bob,
            Craft::GapOverLimit,
            "a message number MAX_MESSAGE_GAP + 1 ahead",
        ),
        Restore(Bob, seeded("salt bob")),
        Send(Bob, t("after restore")),
        Send(Bob, t("delayed in transit")),
        Receive(Alice, 8),
        Send(Alice, t("and back")),
        Receive(Bob, 10),
        Send(Bob, t("on a new chain")),
        // Alice's step skips message 9 of Bob's previous chain (PN = 2).
        Receive(Alice, 11),
        Receive(Alice, 9),
    ]
}

fn script_short() -> Vec<Step> {
    use Step::*;
    use Who::*;
    vec![
        Send(Alice, b"no one-time prekey".to_vec()),
        Receive(Bob, 0),
        Send(Bob, b"reply".to_vec()),
        Receive(Alice, 1),
        Send(Alice, b"third".to_vec()),
        Receive(Bob, 2),
    ]
}

fn inputs(name: &str, opk: bool) -> Inputs {
    Inputs {
        alice_seed: seeded(&format!("{name} alice")),
        bob_seed: seeded(&format!("{name} bob")),
        spk_id: 1,
        spk_private: seeded(&format!("{name} spk")),
        opk: opk.then(|| (42, seeded(&format!("{name} opk")))),
        alice_random: (0..16)
            .map(|i| seeded(&format!("{name} alice random {i}")))
            .collect(),
        bob_random: (0..16)
            .map(|i| seeded(&format!("{name} bob random {i}")))
            .collect(),
        storage_key: seeded(&format!("{name} storage")),
    }
}

fn transcript(name: &str, inp: &mut Inputs, steps: Vec<Step>) -> Result<Value, VectorError> {
    let run = run(inp, steps)?;
    inp.alice_random.truncate(run.alice_used);
    inp.bob_random.truncate(run.bob_used);
    for e in &run.events {
        if e["type"] == "reject" && (e["error"] == "accepted" || e["error"] == "StateChanged") {
            return Err(gen_err(format!("{name}: {e}")));
        }
    }
    Ok(json!({
        "name": name,
        "alice": {"identity_seed": h(&inp.alice_seed)},
        "bob": {
            "identity_seed": h(&inp.bob_seed), "spk_id": inp.spk_id, "spk_private": h(&inp.spk_private),
            "opk_id": inp.opk.map(|o| o.0), "opk_private": inp.opk.map(|o| h(&o.1)),
        },
        "bundle": h(&run.bundle),
        "alice_random": inp.alice_random.iter().map(|v| h(v)).collect::<Vec<_>>(),
        "bob_random": inp.bob_random.iter().map(|v| h(v)).collect::<Vec<_>>(),
        "storage_key": h(&inp.storage_key),
        "x3dh": run.x3dh,
        "events": run.events,
    }))
}

fn bundle_negatives() -> Result<Vec<Value>, VectorError> {
    let bob = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(seeded("negative bob")));
    let mallory = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(seeded("negative mallory")));
    let spk = SignedPrekey::generate(
        5,
        &bob,
        &mut Scripted::new(&[seeded("negative spk").to_vec()]),
    );
    let good = PrekeyBundle::new(bob.public(), &spk, None);
    let renumbered = PrekeyBundle::from_public_parts(
        *bob.public(),
        6,
        *spk.public_key(),
        *good.signature(),
        None,
    );
    let other_identity = PrekeyBundle::from_public_parts(
        *mallory.public(),
        5,
        *spk.public_key(),
        *good.signature(),
        None,
    );
    Ok(vec![
        json!({"bundle": h(&renumbered.to_bytes()), "error": "InvalidSignature", "note": "signature over prekey id 5, bundle says 6"}),
        json!({"bundle": h(&other_identity.to_bytes()), "error": "InvalidSignature", "note": "signed by another identity"}),
    ])
}

pub(crate) fn generate() -> Result<Value, VectorError> {
    let mut a = inputs("full", true);
    let mut b = inputs("short", false);
    Ok(json!({
        "description": "Whole session transcripts (SPEC §6-§11): every intermediate key and every byte on the wire, refused messages, and sealed snapshots.",
        "transcripts": [transcript("with one-time prekey", &mut a, script_full())?, transcript("without one-time prekey", &mut b, script_short())?],
        "bundle_negative": bundle_negatives()?,
    }))
}

pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (ti, t) in list(v, "transcripts")?.iter().enumerate() {
        let randoms = |name: &str| -> Result<Vec<[u8; 32]>, VectorError> {
            list(t, name)?
                .iter()
                .map(|x| {
                    x.as_str()
                        .and_then(|s| hex::decode(s).ok())
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| VectorError::Field(name.into()))
                })
                .collect()
        };
        let bob = crate::util::field(t, "bob")?;
        let opk = match (
            bob.get("opk_id").and_then(Value::as_u64),
            bob.get("opk_private").and_then(Value::as_str),
        ) {
            (Some(id), Some(_)) => Some((id as u32, arr32(bob, "opk_private")?)),
            _ => None,
        };
        let inp = Inputs {
            alice_seed: arr32(crate::util::field(t, "alice")?, "identity_seed")?,
            bob_seed: arr32(bob, "identity_seed")?,
            spk_id: num(bob, "spk_id")? as u32,
            spk_private: arr32(bob, "spk_private")?,
            opk,
            alice_random: randoms("alice_random")?,
            bob_random: randoms("bob_random")?,
            storage_key: arr32(t, "storage_key")?,
        };
        let events = list(t, "events")?;
        let mut steps = vec![];
        for e in events {
            steps.push(match text(e, "type")? {
                "send" => Step::Send(Who::parse(text(e, "from")?)?, bytes(e, "plaintext")?),
                "receive" => {
                    Step::Receive(Who::parse(text(e, "to")?)?, num(e, "message")? as usize)
                }
                "reject" => Step::Reject(
                    Who::parse(text(e, "to")?)?,
                    WireSource::Given(bytes(e, "wire")?),
                    text(e, "note")?.to_string(),
                ),
                "restore" => Step::Restore(Who::parse(text(e, "party")?)?, arr32(e, "salt")?),
                other => return Err(VectorError::Field(format!("unknown event {other}"))),
            });
        }
        match run(&inp, steps) {
            Ok(out) => {
                r.check(t.get("x3dh") == Some(&out.x3dh), || {
                    format!("transcript {ti}: x3dh differs")
                });
                r.check(bytes(t, "bundle")? == out.bundle, || {
                    format!("transcript {ti}: bundle differs")
                });
                r.check(out.events.len() == events.len(), || {
                    format!("transcript {ti}: event count differs")
                });
                for (i, (expected, got)) in events.iter().zip(&out.events).enumerate() {
                    r.check(expected == got, || {
                        format!("transcript {ti} event {i}: expected {expected}, got {got}")
                    });
                }
            }
            Err(e) => r.fail(format!("transcript {ti}: {e}")),
        }
    }
    for (i, c) in list(v, "bundle_negative")?.iter().enumerate() {
        let refused =
            PrekeyBundle::from_bytes(&bytes(c, "bundle")?).is_ok_and(|b| b.verify().is_err());
        r.check(refused && text(c, "error")? == "InvalidSignature", || {
            format!("bundle_negative[{i}] accepted")
        });
    }
    Ok(())
}
