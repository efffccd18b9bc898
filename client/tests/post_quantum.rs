//! Post-quantum sessions through a real relay (SPEC §6.2, §16.7): accounts made before PQXDH
//! move to it and keep their sessions, the policy decides about classical peers, and the
//! post-quantum ratchet (SPEC §7.8) advances through the relay and across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hush_client::{PostQuantum, Undecryptable};

/// Waits for the session `dev` starts or accepts with `user`'s device 1: whether it is
/// post-quantum.
async fn session_with(dev: &mut Dev, user: &str) -> bool {
    dev.next(|e| match e {
        Event::SessionStarted {
            with, post_quantum, ..
        } if with.user == user => Some(*post_quantum),
        _ => None,
    })
    .await
}

async fn post_quantum_with(dev: &Dev, user: &str) -> Option<bool> {
    dev.client.safety_numbers(user).await.unwrap()[0].post_quantum
}

fn text(m: &Message) -> &str {
    match &m.body {
        Body::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classical_accounts_move_to_post_quantum_and_keep_their_sessions() {
    let dir = scratch("pq-upgrade");
    let addr = relay(&dir).await;
    let off = |c: &mut ClientConfig| c.post_quantum = PostQuantum::Off;
    let mut alice = open_with(&dir, &addr, "alice", [1; 32], off).unwrap();
    let mut bob = open_with(&dir, &addr, "bob", [2; 32], off).unwrap();
    alice.online().await;
    bob.online().await;
    alice.client.send_text("bob", "classical").unwrap();
    assert!(!session_with(&mut alice, "bob").await);
    assert_eq!(text(&bob.message().await), "classical");
    assert_eq!(post_quantum_with(&alice, "bob").await, Some(false));

    // Both restart with the default: post-quantum when offered. Their stored state (from
    // before) opens, and the session they have goes on, classical.
    alice.client.stop();
    bob.client.stop();
    drop((alice, bob));
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    bob.next(|e| matches!(e, Event::KemPrekeysUploaded { .. }).then_some(()))
        .await;
    alice
        .client
        .send_text("bob", "still the same session")
        .unwrap();
    assert_eq!(text(&bob.message().await), "still the same session");
    bob.client.send_text("alice", "and back").unwrap();
    assert_eq!(text(&alice.message().await), "and back");
    assert_eq!(post_quantum_with(&alice, "bob").await, Some(false));

    // Bob now publishes KEM prekeys beside a post-quantum signed prekey: a new contact's
    // session with him is post-quantum on both sides.
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    carol.online().await;
    carol
        .client
        .send_text("bob", "hello, post-quantum")
        .unwrap();
    assert!(session_with(&mut carol, "bob").await);
    assert!(session_with(&mut bob, "carol").await);
    assert_eq!(text(&bob.message().await), "hello, post-quantum");
    assert_eq!(post_quantum_with(&carol, "bob").await, Some(true));
    assert_eq!(post_quantum_with(&bob, "carol").await, Some(true));
    bob.client.send_text("carol", "welcome").unwrap();
    assert_eq!(text(&carol.message().await), "welcome");
    // A device Bob never had a session with: no session yet.
    let dave = open(&dir, &addr, "dave", [4; 32]).unwrap();
    dave.online().await;
    assert_eq!(post_quantum_with(&bob, "dave").await, None);
    for d in [&alice, &bob, &carol, &dave] {
        d.client.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_quantum_required_refuses_classical_sessions_both_ways() {
    let dir = scratch("pq-required");
    let addr = relay(&dir).await;
    let off = |c: &mut ClientConfig| c.post_quantum = PostQuantum::Off;
    let required = |c: &mut ClientConfig| c.post_quantum = PostQuantum::Required;
    let mut old = open_with(&dir, &addr, "old", [5; 32], off).unwrap();
    let mut strict = open_with(&dir, &addr, "strict", [6; 32], required).unwrap();
    old.online().await;
    strict.online().await;
    // Starting: "old" offers no KEM prekey, so "strict" starts no session with it.
    let id = strict.client.send_text("old", "refused").unwrap();
    let reason = strict
        .next(|e| match e {
            Event::SendFailed { message_id, reason } if *message_id == id => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(
            &*reason,
            ClientError::Encrypt(hush_client::EncryptError::Init(
                hush_sessions::InitError::ClassicalRefused
            ))
        ),
        "{reason:?}"
    );
    // A device that publishes nothing post-quantum still starts a post-quantum session
    // with one that does: "strict" takes it.
    old.client
        .send_text("strict", "from an old device")
        .unwrap();
    assert!(session_with(&mut old, "strict").await);
    assert_eq!(text(&strict.message().await), "from an old device");

    // Accepting: a peer holding "flexible"'s classical bundle from before it turned to
    // required sends a classical first message afterwards; it is dropped, and nothing
    // changes.
    let flexible = open_with(&dir, &addr, "flexible", [7; 32], off).unwrap();
    flexible.online().await;
    let mut peer = Peer {
        raw: Raw::connect(&addr, "peer").await,
        user: "peer".into(),
        sessions: Default::default(),
    };
    peer.start_session("flexible").await;
    assert!(!peer.sessions["flexible"].is_post_quantum());
    flexible.client.stop();
    drop(flexible);
    let mut flexible = open_with(&dir, &addr, "flexible", [7; 32], required).unwrap();
    flexible.online().await;
    peer.send_over_session("flexible", pc::content::Body::Text("classical".into()))
        .await;
    assert_eq!(
        flexible.dropped().await,
        DropReason::Undecryptable(Undecryptable::ClassicalRefused)
    );
    // Its new bundle is post-quantum: a new session is.
    let mut again = Peer {
        raw: Raw::connect(&addr, "again").await,
        user: "again".into(),
        sessions: Default::default(),
    };
    again
        .send_content("flexible", pc::content::Body::Text("post-quantum".into()))
        .await;
    assert!(again.sessions["flexible"].is_post_quantum());
    assert_eq!(text(&flexible.message().await), "post-quantum");
    for d in [&old, &strict, &flexible] {
        d.client.stop();
    }
}

/// A conversation through the relay, with a restart of both clients in the middle: the
/// post-quantum ratchet's epochs complete on both sides and their secrets are mixed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_quantum_ratchet_advances_through_the_relay_and_restarts() {
    let dir = scratch("pq-ratchet");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    bob.next(|e| matches!(e, Event::KemPrekeysUploaded { .. }).then_some(()))
        .await;
    for round in 0..60 {
        if round == 30 {
            alice.client.stop();
            bob.client.stop();
            drop((alice, bob));
            alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
            bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
            alice.online().await;
            bob.online().await;
        }
        alice
            .client
            .send_text("bob", &format!("ping {round}"))
            .unwrap();
        assert_eq!(text(&bob.message().await), format!("ping {round}"));
        bob.client
            .send_text("alice", &format!("pong {round}"))
            .unwrap();
        assert_eq!(text(&alice.message().await), format!("pong {round}"));
    }
    for (dev, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let d = &dev.client.safety_numbers(peer).await.unwrap()[0];
        assert_eq!(d.post_quantum, Some(true));
        let pq = d
            .pq_ratchet
            .expect("the session runs the post-quantum ratchet");
        // An epoch takes 23 round trips (12 key chunks, then 11 ciphertext chunks): 60 cover
        // two and start a third.
        assert!(pq.epoch >= 3 && pq.mixed >= 2, "{peer}: {pq:?}");
    }
}
