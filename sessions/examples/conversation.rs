//! A conversation between Alice and Bob, end to end, with no network: prekey bundle, X3DH,
//! out-of-order delivery, a tampered message, sealing state at rest, and safety numbers.
//!
//! Run: `cargo run -p hush-sessions --example conversation`

use hush_crypto::{IdentityKeyPair, SafetyNumber, StorageKey};
use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rng();
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);

    // Bob publishes a bundle: signed prekey 1 and one-time prekey 1000.
    let spk = SignedPrekey::generate(1, &bob_id, &mut rng);
    let opk = OneTimePrekey::generate(1000, &mut rng);
    let bundle = PrekeyBundle::new(bob_id.public(), &spk, Some(&opk)).to_bytes();
    println!("bob's bundle: {} bytes", bundle.len());

    // Alice fetches it and starts a session.
    let mut alice = Session::initiate(
        &alice_id,
        &PrekeyBundle::from_bytes(&bundle)?,
        None,
        &mut rng,
    )?;
    let first = alice.encrypt(b"Hi Bob, it's Alice.")?.to_bytes();
    println!("alice -> bob: prekey message, {} bytes", first.len());

    // Bob accepts it with the prekeys it names.
    let SessionMessage::Prekey(m) = SessionMessage::from_bytes(&first)? else {
        return Err("expected a prekey message".into());
    };
    let (mut bob, text) = Session::accept(&bob_id, &spk, Some(&opk), &m, None, &mut rng)?;
    println!("bob reads: {}", String::from_utf8_lossy(&text));

    // Bob sends three messages; they arrive in reverse order.
    let replies: Vec<Vec<u8>> = ["one", "two", "three"]
        .iter()
        .map(|t| bob.encrypt(t.as_bytes()).map(|m| m.to_bytes()))
        .collect::<Result<_, _>>()?;
    for r in replies.iter().rev() {
        println!(
            "alice reads: {}",
            String::from_utf8_lossy(&alice.decrypt_bytes(r, &mut rng)?)
        );
    }

    // A tampered copy is refused, and Alice's session is unchanged.
    let mut tampered = alice.encrypt(b"unchanged")?.to_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    match bob.decrypt_bytes(&tampered, &mut rng) {
        Err(e) => println!("bob, tampered message: {e}"),
        Ok(_) => return Err("a tampered message was accepted".into()),
    }

    // The app seals Bob's state with its storage key, and restores it later.
    let storage = StorageKey::generate(&mut rng);
    let sealed = bob.seal(&storage, &mut rng)?;
    let mut bob = Session::unseal(&storage, &sealed)?;
    println!("bob's sealed state: {} bytes", sealed.len());
    let again = alice.encrypt(b"Still there after the restart?")?.to_bytes();
    println!(
        "bob reads: {}",
        String::from_utf8_lossy(&bob.decrypt_bytes(&again, &mut rng)?)
    );

    // They compare safety numbers out of band.
    let number = SafetyNumber::compute((b"alice", alice_id.public()), (b"bob", bob_id.public()));
    println!("safety number: {number}");
    Ok(())
}
