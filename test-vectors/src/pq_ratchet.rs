//! Post-quantum ratchet vectors (SPEC §7.8): the erasure code on a real key and ciphertext; a
//! PQXDH transcript through several epochs with reordering and loss, and messages that must
//! be refused; and a compromise of Alice's state in a ping-pong, with where it heals.
//!
//! Every draw of each party's RNG is recorded in order (32 bytes for an X25519 key or an
//! encapsulation, 64 for an ML-KEM key pair's seed), so a verifier replays the sessions
//! exactly. The Rust verifier replays the file's plan and draws through the real sessions.

use std::convert::Infallible;

use hush_crypto::kem::KemKeyPair;
use hush_crypto::{IdentityKeyPair, SecretBytes};
use hush_sessions::bundle::kem_prekey_message;
use hush_sessions::pq_ratchet::{CIPHERTEXT_CHUNKS, KEY_CHUNKS};
use hush_sessions::{
    DecryptError, Header, KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage,
    SignedPrekey, Suite,
};
use serde_json::{Value, json};

use crate::util::{Report, VectorError, bytes, gen_err, h, list, num, seeded, text};

/// A deterministic byte stream: SHA-256(seed ‖ counter), counter a big-endian u64. Stable
/// across library versions, unlike a general-purpose RNG's algorithm.
struct Stream {
    seed: [u8; 32],
    counter: u64,
    buf: Vec<u8>,
}

impl Stream {
    fn new(label: &str) -> Self {
        Self {
            seed: seeded(label),
            counter: 0,
            buf: vec![],
        }
    }
    fn fill(&mut self, dst: &mut [u8]) {
        for b in dst.iter_mut() {
            if self.buf.is_empty() {
                self.buf =
                    hush_crypto::hash::sha256(&[&self.seed, &self.counter.to_be_bytes()]).to_vec();
                self.counter += 1;
            }
            *b = self.buf.remove(0);
        }
    }
    fn below(&mut self, n: usize) -> usize {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_be_bytes(b) as usize % n
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// An RNG that serves either fresh bytes (generation) or a file's draws (verification), and
/// records every draw.
struct Recorder {
    source: Source,
    log: Vec<Vec<u8>>,
}

enum Source {
    Fresh(Stream),
    Replay(Vec<Vec<u8>>, usize),
}

impl Recorder {
    fn fresh(label: &str) -> Self {
        Self {
            source: Source::Fresh(Stream::new(label)),
            log: vec![],
        }
    }
    fn replay(draws: Vec<Vec<u8>>) -> Self {
        Self {
            source: Source::Replay(draws, 0),
            log: vec![],
        }
    }
}

impl rand_core::TryRng for Recorder {
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
        match &mut self.source {
            Source::Fresh(r) => r.fill(dst),
            Source::Replay(draws, i) => {
                // A draw of another length than recorded, or past the end, yields zeros: the
                // verifier then fails by mismatch.
                match draws.get(*i) {
                    Some(d) if d.len() == dst.len() => dst.copy_from_slice(d),
                    _ => dst.fill(0),
                }
                *i += 1;
            }
        }
        self.log.push(dst.to_vec());
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Recorder {}

/// The two identities and Bob's prekeys, from secrets named by a label: a post-quantum
/// signed prekey (id 1), a one-time prekey (id 2), a one-time KEM prekey (id 3).
struct Keys {
    alice_seed: [u8; 32],
    bob_seed: [u8; 32],
    spk: [u8; 32],
    opk: [u8; 32],
    kem: [u8; 64],
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    signed: SignedPrekey,
    one_time: OneTimePrekey,
    kem_prekey: KemPrekey,
}

fn keys(label: &str) -> Keys {
    let (alice_seed, bob_seed) = (
        seeded(&format!("{label} alice")),
        seeded(&format!("{label} bob")),
    );
    let (spk, opk) = (
        seeded(&format!("{label} spk")),
        seeded(&format!("{label} opk")),
    );
    let mut kem = [0u8; 64];
    kem[..32].copy_from_slice(&seeded(&format!("{label} kem d")));
    kem[32..].copy_from_slice(&seeded(&format!("{label} kem z")));
    let alice = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(alice_seed));
    let bob = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(bob_seed));
    let signed = SignedPrekey::generate_for(
        Suite::PostQuantum,
        1,
        &bob,
        &mut Recorder::replay(vec![spk.to_vec()]),
    );
    let pair = KemKeyPair::from_seed(SecretBytes::from_bytes(kem));
    let signature = bob.sign(&kem_prekey_message(3, pair.public()));
    Keys {
        one_time: OneTimePrekey::from_secret_bytes(2, &SecretBytes::from_bytes(opk)),
        kem_prekey: KemPrekey::from_parts(3, false, SecretBytes::from_bytes(kem), signature),
        alice_seed,
        bob_seed,
        spk,
        opk,
        kem,
        alice,
        bob,
        signed,
    }
}

impl Keys {
    fn bundle(&self) -> PrekeyBundle {
        PrekeyBundle::new(self.bob.public(), &self.signed, Some(&self.one_time))
            .with_kem_prekey(&self.kem_prekey)
    }

    fn accept(&self, first: &SessionMessage, rng: &mut Recorder) -> Result<Session, VectorError> {
        let SessionMessage::Prekey(p) = first else {
            return Err(gen_err("expected a prekey message"));
        };
        Session::accept_with_kem(
            &self.bob,
            &self.signed,
            Some(&self.one_time),
            Some(&self.kem_prekey),
            p,
            None,
            rng,
        )
        .map(|(s, _)| s)
        .map_err(gen_err)
    }
}

fn keys_json(k: &Keys) -> Value {
    json!({
        "alice_identity_seed": h(&k.alice_seed), "bob_identity_seed": h(&k.bob_seed),
        "spk_id": 1, "spk_private": h(&k.spk), "opk_id": 2, "opk_private": h(&k.opk),
        "kem_id": 3, "kem_seed": h(&k.kem), "bundle": h(&k.bundle().to_bytes()),
    })
}

/// One step of a transcript's plan.
enum Step {
    Send(bool, Vec<u8>),
    Receive(bool, usize),
    Reject(bool, Vec<u8>, String),
}

fn error_class(e: &DecryptError) -> &'static str {
    match e {
        DecryptError::Decode(_) => "Decode",
        DecryptError::Duplicate => "Duplicate",
        DecryptError::Authentication => "Authentication",
        DecryptError::PostQuantum(_) => "PostQuantum",
        _ => "Other",
    }
}

struct Run {
    events: Vec<Value>,
    alice_draws: Vec<Vec<u8>>,
    bob_draws: Vec<Vec<u8>>,
}

fn status(s: &Session) -> Value {
    let pq = s.pq_ratchet();
    json!({"epoch": pq.map(|p| p.epoch), "mixed": pq.map(|p| p.mixed)})
}

/// Runs a plan through real sessions. Alice's first message (the prekey message) is sent and
/// accepted before the plan.
fn run(k: &Keys, plan: &[Step], mut ra: Recorder, mut rb: Recorder) -> Result<Run, VectorError> {
    let mut alice = Session::initiate(&k.alice, &k.bundle(), None, &mut ra).map_err(gen_err)?;
    let first = alice.encrypt(b"first").map_err(gen_err)?;
    let mut bob = k.accept(&first, &mut rb)?;
    let mut events = vec![json!({"type": "first", "wire": h(&first.to_bytes())})];
    let mut sent: Vec<Vec<u8>> = vec![];
    for step in plan {
        match step {
            Step::Send(from_alice, pt) => {
                let s = if *from_alice { &mut alice } else { &mut bob };
                let wire = s.encrypt(pt).map_err(gen_err)?.to_bytes();
                events.push(json!({
                    "type": "send", "from": if *from_alice { "alice" } else { "bob" },
                    "index": sent.len(), "plaintext": h(pt), "wire": h(&wire), "status": status(s),
                }));
                sent.push(wire);
            }
            Step::Receive(to_alice, i) => {
                let (s, rng) = if *to_alice {
                    (&mut alice, &mut ra)
                } else {
                    (&mut bob, &mut rb)
                };
                let wire = sent.get(*i).ok_or_else(|| gen_err("no such message"))?;
                let pt = s.decrypt_bytes(wire, rng).map_err(gen_err)?;
                events.push(json!({
                    "type": "receive", "to": if *to_alice { "alice" } else { "bob" },
                    "message": i, "plaintext": h(&pt), "status": status(s),
                }));
            }
            Step::Reject(to_alice, wire, note) => {
                let (s, rng) = if *to_alice {
                    (&mut alice, &mut ra)
                } else {
                    (&mut bob, &mut rb)
                };
                let before = s.to_bytes();
                let class = match s.decrypt_bytes(wire, rng) {
                    Ok(_) => return Err(gen_err(format!("{note}: accepted"))),
                    Err(e) => error_class(&e),
                };
                if *s.to_bytes() != *before {
                    return Err(gen_err(format!("{note}: the state changed")));
                }
                events.push(json!({
                    "type": "reject", "to": if *to_alice { "alice" } else { "bob" },
                    "wire": h(wire), "error": class, "note": note,
                }));
            }
        }
    }
    Ok(Run {
        events,
        alice_draws: ra.log,
        bob_draws: rb.log,
    })
}

/// The transcript's plan: bursts either way, a fifth of the messages lost, deliveries in a
/// shuffled order; then everything still in flight; then the negatives.
fn transcript_plan() -> Vec<Step> {
    let mut dice = Stream::new("pq ratchet transcript plan");
    let mut plan = vec![];
    let mut in_flight: [Vec<usize>; 2] = [vec![], vec![]]; // [to bob, to alice]
    let mut count = 0usize;
    for round in 0..200 {
        let from_alice = round % 2 == 0;
        for _ in 0..1 + dice.below(2) {
            plan.push(Step::Send(from_alice, format!("m{count}").into_bytes()));
            if dice.chance(80) {
                in_flight[usize::from(!from_alice)].push(count);
            }
            count += 1;
        }
        for to_alice in [false, true] {
            let q = &mut in_flight[usize::from(to_alice)];
            while !q.is_empty() && dice.chance(70) {
                let i = dice.below(q.len());
                plan.push(Step::Receive(to_alice, q.swap_remove(i)));
            }
        }
    }
    for to_alice in [false, true] {
        while let Some(i) = in_flight[usize::from(to_alice)].pop() {
            plan.push(Step::Receive(to_alice, i));
        }
    }
    plan
}

/// Re-encodes a ratchet message's header through `change`, keeping the ciphertext.
fn with_header(wire: &[u8], change: impl FnOnce(&mut Header)) -> Result<Vec<u8>, VectorError> {
    let msg = SessionMessage::from_bytes(wire).map_err(gen_err)?;
    let r = msg.ratchet_message();
    let mut header = *r.header();
    change(&mut header);
    Ok(ratchet_wire(&header.encode(), r.ciphertext()))
}

/// Protobuf `SessionMessage{ratchet: RatchetMessage{header, ciphertext}}` from raw parts.
fn ratchet_wire(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
        out
    }
    field(
        0x0a,
        &[field(0x0a, header), field(0x12, ciphertext)].concat(),
    )
}

/// The negatives: Bob's next message to Alice, altered. Each must be refused by Alice with
/// its class, her state unchanged.
fn negatives(k: &Keys, plan: &[Step]) -> Result<Vec<Step>, VectorError> {
    // Bob's next message after the plan: replay the plan and encrypt one more.
    let mut extended: Vec<Step> = plan
        .iter()
        .map(|s| match s {
            Step::Send(a, p) => Step::Send(*a, p.clone()),
            Step::Receive(a, i) => Step::Receive(*a, *i),
            Step::Reject(a, w, n) => Step::Reject(*a, w.clone(), n.clone()),
        })
        .collect();
    extended.push(Step::Send(false, b"next".to_vec()));
    let r = run(
        k,
        &extended,
        Recorder::fresh("pq ratchet alice"),
        Recorder::fresh("pq ratchet bob"),
    )?;
    let last = r.events.last().ok_or_else(|| gen_err("no events"))?;
    let wire = bytes(last, "wire")?;
    let mut out = vec![
        Step::Reject(
            true,
            with_header(&wire, |hd| hd.pq = None)?,
            "the header's post-quantum part removed (a downgrade)".into(),
        ),
        Step::Reject(
            true,
            with_header(&wire, |hd| {
                if let Some(pq) = &mut hd.pq {
                    pq.epoch += 1;
                }
            })?,
            "the epoch raised: the header no longer authenticates".into(),
        ),
    ];
    let mut flipped = wire.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 0x01;
    }
    out.push(Step::Reject(
        true,
        flipped,
        "the tag's last byte flipped".into(),
    ));
    // Malformed post-quantum parts are refused at decoding.
    let classical = Header {
        pq: None,
        ..*SessionMessage::from_bytes(&wire)
            .map_err(gen_err)?
            .ratchet_message()
            .header()
    }
    .encode();
    for (body, note) in [
        (vec![0x10, 0x01], "epoch 0 (absent)"),
        (vec![0x08, 0x02, 0x10, 0x02], "mixed not below epoch"),
        (
            [vec![0x08, 0x01, 0x22, 103], vec![1; 103]].concat(),
            "a 103-byte chunk",
        ),
        (
            [vec![0x08, 0x01, 0x18, 0x80, 0x02, 0x22, 104], vec![1; 104]].concat(),
            "chunk index 256",
        ),
        (
            vec![0x08, 0x01, 0x18, 0x05],
            "a chunk index without a chunk",
        ),
    ] {
        let mut header = classical.clone();
        header.push(0x2a);
        header.push(body.len() as u8);
        header.extend_from_slice(&body);
        out.push(Step::Reject(
            true,
            ratchet_wire(&header, &[0u8; 32]),
            format!("malformed post-quantum part: {note}"),
        ));
    }
    Ok(out)
}

/// Ping-pong; Alice's state is copied just after she draws a key pair (she enters epoch 3);
/// the adversary holding the copy is handed each X25519 ratchet secret Alice draws and its
/// own randomness for ML-KEM. Returns the copy point and how many messages each side sent
/// after it until the adversary could read no more.
fn compromise(k: &Keys) -> Result<Value, VectorError> {
    let (healed, ra, rb) = compromise_run(k)?;
    Ok(json!({
        "keys": keys_json(k),
        "alice_random": ra.iter().map(|d| h(d)).collect::<Vec<_>>(),
        "bob_random": rb.iter().map(|d| h(d)).collect::<Vec<_>>(),
        "healed": healed,
    }))
}

type Draws = Vec<Vec<u8>>;

fn compromise_run(k: &Keys) -> Result<(Value, Draws, Draws), VectorError> {
    let mut ra = Recorder::fresh("pq compromise alice");
    let mut rb = Recorder::fresh("pq compromise bob");
    let mut alice = Session::initiate(&k.alice, &k.bundle(), None, &mut ra).map_err(gen_err)?;
    let first = alice.encrypt(b"first").map_err(gen_err)?;
    let mut bob = k.accept(&first, &mut rb)?;
    let mut eve: Option<(Session, usize)> = None;
    let (mut sent_a, mut sent_b) = (0usize, 0usize);
    let mut seen_keys: Vec<[u8; 32]> = vec![];
    let mut own = Stream::new("pq compromise adversary");
    for round in 0..200usize {
        let ma = alice.encrypt(b"a").map_err(gen_err)?;
        if let Some((e, _)) = eve.as_mut() {
            sent_a += 1;
            let me = e.encrypt(b"a").map_err(gen_err)?;
            let body = |m: &SessionMessage| {
                let c = m.ratchet_message().ciphertext();
                c[..c.len() - 16].to_vec()
            };
            if body(&me) != body(&ma) {
                return Ok((healed(&eve, sent_a - 1, sent_b), ra.log, rb.log));
            }
        }
        bob.decrypt(&ma, &mut rb).map_err(gen_err)?;
        let mb = bob.encrypt(b"b").map_err(gen_err)?;
        if eve.is_some() {
            sent_b += 1;
        }
        let key = mb.ratchet_message().header().ratchet_key.to_bytes();
        let root_step = !seen_keys.contains(&key);
        seen_keys.push(key);
        let before = ra.log.len();
        let epoch_before = alice.pq_ratchet().map(|p| p.epoch);
        alice.decrypt(&mb, &mut ra).map_err(gen_err)?;
        if let Some((e, _)) = eve.as_mut() {
            let mut draws = vec![];
            for (j, d) in ra.log[before..].iter().enumerate() {
                if j == 0 && root_step {
                    draws.push(d.clone());
                } else {
                    let mut mine = vec![0u8; d.len()];
                    own.fill(&mut mine);
                    draws.push(mine);
                }
            }
            if e.decrypt(&mb, &mut Recorder::replay(draws)).is_err() {
                return Ok((healed(&eve, sent_a, sent_b - 1), ra.log, rb.log));
            }
        }
        let entered_three =
            epoch_before == Some(2) && alice.pq_ratchet().map(|p| p.epoch) == Some(3);
        if eve.is_none() && entered_three {
            eve = Some((
                Session::from_bytes(&alice.to_bytes()).map_err(gen_err)?,
                round,
            ));
        }
    }
    Err(gen_err("the adversary never lost track"))
}

fn healed(eve: &Option<(Session, usize)>, a: usize, b: usize) -> Value {
    json!({
        "after_round": eve.as_ref().map(|(_, r)| *r),
        "alice_sent": a, "bob_sent": b,
    })
}

fn erasure() -> Value {
    let key = KemKeyPair::from_seed(SecretBytes::from_bytes([0x5a; 64]));
    let ek = key.public().to_bytes().to_vec();
    let (ct, _) = key
        .public()
        .encapsulate(&mut Recorder::replay(vec![vec![0x33; 32]]));
    let ct = ct.as_bytes().to_vec();
    let mut cases = vec![];
    for (name, payload, k) in [
        ("key", &ek, KEY_CHUNKS),
        ("ciphertext", &ct, CIPHERTEXT_CHUNKS),
    ] {
        let idx: Vec<u8> = vec![0, 1, (k - 1) as u8, k as u8, (k + 1) as u8, 100, 254, 255];
        let chunks: Vec<Value> = idx
            .iter()
            .map(|&x| json!({"index": x, "chunk": h(&hush_sessions::pq_ratchet::encode_chunk(payload, x))}))
            .collect();
        cases.push(json!({"payload": name, "bytes": h(payload), "k": k, "chunks": chunks}));
    }
    json!(cases)
}

pub(crate) fn generate() -> Result<Value, VectorError> {
    let k = keys("pq ratchet");
    let mut plan = transcript_plan();
    let negatives = negatives(&k, &plan)?;
    plan.extend(negatives);
    let r = run(
        &k,
        &plan,
        Recorder::fresh("pq ratchet alice"),
        Recorder::fresh("pq ratchet bob"),
    )?;
    let ck = keys("pq compromise");
    Ok(json!({
        "description": "The post-quantum ratchet (SPEC §7.8). erasure: chunks of an ML-KEM-768 key and ciphertext (§7.8.3). transcript: a PQXDH session whose first message Bob has accepted, then sends and deliveries (lost messages are never delivered, the rest in shuffled order) through several epochs, each event with the party's epoch and newest mixed epoch after it, then messages Alice must refuse leaving her state unchanged; alice_random and bob_random are every RNG draw in order (first message and acceptance included). compromise: a ping-pong in which Alice's whole state is copied just after she draws her epoch-3 key pair, at the end of round after_round; an adversary with the copy that learns each X25519 ratchet secret Alice draws (but not her ML-KEM randomness) reads every message until Alice has sent alice_sent and Bob bob_sent more, and none after (§7.8.8).",
        "erasure": erasure(),
        "transcript": {
            "keys": keys_json(&k),
            "alice_random": r.alice_draws.iter().map(|d| h(d)).collect::<Vec<_>>(),
            "bob_random": r.bob_draws.iter().map(|d| h(d)).collect::<Vec<_>>(),
            "events": r.events,
        },
        "compromise": compromise(&ck)?,
    }))
}

/// Replays the file's plan with its draws through the real sessions and compares each event.
pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    let t = v
        .get("transcript")
        .ok_or_else(|| gen_err("no transcript"))?;
    let draws = |name: &str| -> Result<Vec<Vec<u8>>, VectorError> {
        list(t, name)?
            .iter()
            .map(|d| {
                hex::decode(d.as_str().unwrap_or_default()).map_err(|e| gen_err(e.to_string()))
            })
            .collect()
    };
    let k = keys("pq ratchet");
    r.check(t.get("keys") == Some(&keys_json(&k)), || {
        "pq_ratchet transcript keys differ".into()
    });
    let mut plan = vec![];
    for e in list(t, "events")? {
        let to_alice = |f: &str| -> Result<bool, VectorError> { Ok(text(e, f)? == "alice") };
        match text(e, "type")? {
            "first" => {}
            "send" => plan.push(Step::Send(to_alice("from")?, bytes(e, "plaintext")?)),
            "receive" => plan.push(Step::Receive(to_alice("to")?, num(e, "message")? as usize)),
            "reject" => plan.push(Step::Reject(
                to_alice("to")?,
                bytes(e, "wire")?,
                text(e, "note")?.to_string(),
            )),
            other => return Err(gen_err(format!("unknown event {other}"))),
        }
    }
    let run = run(
        &k,
        &plan,
        Recorder::replay(draws("alice_random")?),
        Recorder::replay(draws("bob_random")?),
    )?;
    let expected = list(t, "events")?;
    r.check(expected.len() == run.events.len(), || {
        "pq_ratchet: event count".into()
    });
    for (i, (want, got)) in expected.iter().zip(&run.events).enumerate() {
        r.check(want == got, || {
            format!("pq_ratchet transcript event {i} differs")
        });
    }
    let erasure_ok = v.get("erasure") == Some(&erasure());
    r.check(erasure_ok, || "pq_ratchet erasure chunks differ".into());
    let computed = compromise(&keys("pq compromise"))?;
    r.check(v.get("compromise") == Some(&computed), || {
        format!(
            "pq_ratchet compromise differs (computed healing point {})",
            computed["healed"]
        )
    });
    Ok(())
}
