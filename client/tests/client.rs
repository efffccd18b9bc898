//! The client against an in-process relay on loopback: the store is sealed and bound to its
//! key, and hostile envelopes (garbage, tampered, replayed from another address) are
//! dropped without touching the session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_sealed_and_opens_only_with_its_key() {
    let dir = scratch("sealed");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    let secret = "the eagle lands at midnight";
    alice.client.send_text("bob", secret).unwrap();
    assert_eq!(bob.message().await.body, Body::Text(secret.into()));
    bob.client.send_text("alice", "roger that, over").unwrap();
    alice.message().await;
    alice.client.stop();
    bob.client.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Neither device's database holds the texts or the identity seed in the clear.
    for user in ["alice", "bob"] {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!(
                "{}{suffix}",
                dir.join(format!("{user}.db")).display()
            )) {
                bytes.extend(b);
            }
        }
        assert!(!bytes.is_empty());
        for needle in [secret.as_bytes(), b"roger that, over".as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{user}'s store leaks a text"
            );
        }
    }
    // The history reopens with the right key, and not with another.
    drop(bob);
    let bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let texts: Vec<Body> = bob
        .client
        .messages()
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        texts,
        [
            Body::Text(secret.into()),
            Body::Text("roger that, over".into())
        ]
    );
    drop(bob);
    assert!(matches!(
        open(&dir, &addr, "bob", [3; 32]),
        Err(ClientError::Sealed)
    ));
    // A store belongs to one address.
    let wrong = ClientConfig::new(
        format!("ws://{addr}"),
        dir.join("bob.db"),
        StorageKey::from_bytes([2; 32]),
        "carol",
        1,
    );
    assert!(matches!(Client::open(wrong), Err(ClientError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_envelopes_are_dropped_and_the_session_is_untouched() {
    let dir = scratch("hostile");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    bob.online().await;
    bob.client.stop();
    bob.next(|e| matches!(e, Event::Disconnected { .. }).then_some(()))
        .await;
    alice.online().await;
    // Alice's first message waits at the relay while Bob is away: Mallory copies it.
    alice.client.send_text("bob", "first").unwrap();
    alice
        .next(|e| matches!(e, Event::Receipt { .. }).then_some(()))
        .await;
    let inspection = hush_relay::store::inspect(&dir.join("relay.db")).unwrap();
    let captured = inspection.queued.last().unwrap().1.ciphertext.clone();

    let mut mallory = Raw::connect(&addr, "mallory").await;
    // Garbage, a payload of random session bytes, Alice's prekey message replayed from
    // Mallory's address, and a tampered copy of it.
    mallory.send_to("bob", vec![0xff, 0x00, 0x13]).await;
    let mut session_garbage = vec![0x0a, 0x40];
    session_garbage.extend([7u8; 64]);
    mallory.send_to("bob", session_garbage).await;
    mallory.send_to("bob", captured.clone()).await;
    let mut tampered = captured.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    mallory.send_to("bob", tampered).await;

    bob.online().await;
    assert_eq!(bob.message().await.body, Body::Text("first".into()));
    for _ in 0..4 {
        let reason = bob.dropped().await;
        assert!(
            matches!(
                reason,
                DropReason::Malformed | DropReason::Undecryptable(_) | DropReason::NoSession
            ),
            "{reason:?}"
        );
    }
    // The session with Alice goes on as if nothing happened.
    alice.client.send_text("bob", "second").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("second".into()));
    bob.client.send_text("alice", "both arrived").unwrap();
    assert_eq!(
        alice.message().await.body,
        Body::Text("both arrived".into())
    );
    // Nothing from Mallory made it into Bob's history.
    let from: Vec<String> = bob
        .client
        .messages()
        .unwrap()
        .iter()
        .map(|m| m.from.user.clone())
        .collect();
    assert!(!from.contains(&"mallory".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_prekey_rotates_on_schedule_and_old_first_messages_still_open() {
    let dir = scratch("rotation");
    let addr = relay(&dir).await;
    let config = |user: &str, key: [u8; 32]| {
        let mut c = ClientConfig::new(
            format!("ws://{addr}"),
            dir.join(format!("{user}.db")),
            StorageKey::from_bytes(key),
            user,
            1,
        );
        c.signed_prekey_rotation = Duration::from_secs(1);
        c.poll_interval = Duration::from_millis(200);
        c
    };
    // Bob keeps no one-time KEM prekeys: his bundles carry his last-resort KEM prekey,
    // which rotates with the signed prekey.
    let mut bob_config = config("bob", [2; 32]);
    bob_config.kem_prekey_batch = 0;
    let (bob, bob_events) = Client::open(bob_config).unwrap();
    let mut bob = Dev {
        client: bob,
        events: bob_events,
    };
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    bob.online().await;
    alice.online().await;
    // Alice's first message is built on signed prekey 1 and the first last-resort KEM
    // prekey, and waits at the relay.
    bob.client.stop();
    bob.next(|e| matches!(e, Event::Disconnected { .. }).then_some(()))
        .await;
    alice
        .client
        .send_text("bob", "on the first signed prekey")
        .unwrap();
    alice
        .next(|e| matches!(e, Event::Receipt { .. }).then_some(()))
        .await;
    // Bob stays away longer than two rotation periods.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Bob comes back, rotates both keys, uploads the new ones, and still opens Alice's
    // message: a replacement keeps the key it replaces, however old.
    bob.online().await;
    let id = bob
        .next(|e| match e {
            Event::SignedPrekeyRotated { id } => Some(*id),
            _ => None,
        })
        .await;
    assert!(id >= 2);
    let post_quantum = bob
        .next(|e| match e {
            Event::SessionStarted { post_quantum, .. } => Some(*post_quantum),
            _ => None,
        })
        .await;
    assert!(post_quantum);
    assert_eq!(
        bob.message().await.body,
        Body::Text("on the first signed prekey".into())
    );
    // A newcomer's first contact uses the new key.
    let carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    carol.online().await;
    carol.client.send_text("bob", "on the new one").unwrap();
    assert_eq!(
        bob.message().await.body,
        Body::Text("on the new one".into())
    );
}

/// A counter from the relay's `/metrics` (0 when absent).
async fn metric(addr: &str, series: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_acknowledged_in_batches() {
    let dir = scratch("ack-batch");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    alice.client.send_text("bob", "first").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("first".into()));
    bob.client.stop();
    // While Bob is away, 60 messages wait for him at the relay.
    const N: usize = 60;
    for i in 0..N {
        alice.client.send_text("bob", &format!("m{i}")).unwrap();
    }
    for _ in 0..N {
        alice
            .next(|e| {
                matches!(
                    e,
                    Event::Receipt {
                        kind: hush_client::ReceiptKind::Sent,
                        ..
                    }
                )
                .then_some(())
            })
            .await;
    }
    let acks_before = metric(&addr, "hush_requests_total{kind=\"ack\"}").await;
    drop(bob);
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    bob.online().await;
    for i in 0..N {
        assert_eq!(bob.message().await.body, Body::Text(format!("m{i}")));
    }
    // Every envelope is acknowledged (none comes again) with far fewer Ack frames than
    // envelopes: one per batch of what had arrived, not one per envelope.
    let mut acked = 0;
    for _ in 0..100 {
        acked = metric(&addr, "hush_acks_total").await;
        if acked > N as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(acked, N as u64 + 1);
    let ack_frames = metric(&addr, "hush_requests_total{kind=\"ack\"}").await - acks_before;
    assert!(
        ack_frames >= 1 && ack_frames <= N as u64 / 4,
        "{ack_frames} Ack frames for {N} envelopes"
    );
}

/// A hand-built device sending client payloads over its own sessions (SPEC §16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_without_the_newcomers_directory_entry_is_refused_and_changes_nothing() {
    use hush_groups::{Group, GroupConfig, Role};
    let dir = scratch("add-no-entry");
    let addr = relay(&dir).await;
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    bob.online().await;
    let bob_key = *bob.client.identity_key();
    let mut admin = Peer {
        raw: Raw::connect(&addr, "admin").await,
        user: "admin".into(),
        sessions: Default::default(),
    };
    // The admin creates a group with Bob, as the SDK would (SPEC §16.6).
    let (mut group, create) = Group::create(
        &admin.raw.id,
        &[(bob_key, Role::Member)],
        GroupConfig::default(),
        &mut rand::rng(),
    )
    .unwrap();
    let gid = *group.id();
    let bob_entry = pc::Member {
        identity_key: bob_key.to_bytes().to_vec(),
        user_id: "bob".into(),
        device_id: 1,
    };
    let directory = vec![admin.member(), bob_entry];
    admin
        .send_content(
            "bob",
            pc::content::Body::GroupControl(pc::GroupControl {
                group_id: gid.to_vec(),
                control: create,
                group_info: vec![],
                directory,
                name: "g".into(),
            }),
        )
        .await;
    bob.next(|e| {
        matches!(
            e,
            Event::Group {
                change: GroupChange::Joined { .. },
                ..
            }
        )
        .then_some(())
    })
    .await;

    // Carol is added, but the control carries no directory entry for her: refused.
    let carol = IdentityKeyPair::generate(&mut rand::rng());
    let (add, _info) = group
        .add(&admin.raw.id, carol.public(), Role::Member)
        .unwrap();
    let control = |directory: Vec<pc::Member>| {
        pc::content::Body::GroupControl(pc::GroupControl {
            group_id: gid.to_vec(),
            control: add.clone(),
            group_info: vec![],
            directory,
            name: String::new(),
        })
    };
    admin.send_content("bob", control(vec![])).await;
    assert_eq!(bob.dropped().await, DropReason::Malformed);
    // Nothing changed: the same add, now with Carol's entry, applies (it would be a stale
    // epoch had the first one been applied).
    let carol_entry = pc::Member {
        identity_key: carol.public().to_bytes().to_vec(),
        user_id: "carol".into(),
        device_id: 1,
    };
    admin.send_content("bob", control(vec![carol_entry])).await;
    let added = bob
        .next(|e| match e {
            Event::Group {
                change: GroupChange::Added(a),
                ..
            } => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!((added.user.as_str(), added.device), ("carol", 1));
    let groups = bob.client.groups().unwrap();
    assert!(groups[0].2.iter().any(|a| a.user == "carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_the_memory_store_talks_and_restarts() {
    let dir = scratch("memory-store");
    let addr = relay(&dir).await;
    let config = |user: &str, key: u8| {
        ClientConfig::new(
            format!("ws://{addr}"),
            dir.join(format!("{user}.db")),
            StorageKey::from_bytes([key; 32]),
            user,
            1,
        )
    };
    let disk = hush_client::MemoryStore::new();
    let (client, events) = Client::open_with_store(config("alice", 1), disk.clone()).unwrap();
    let mut alice = Dev { client, events };
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    alice.client.send_text("bob", "from memory").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("from memory".into()));
    bob.client.send_text("alice", "to memory").unwrap();
    assert_eq!(alice.message().await.body, Body::Text("to memory".into()));
    alice.client.stop();
    drop(alice);
    // The same "disk", reopened: the identity, the session and the history are there, and
    // the conversation goes on without a new session.
    let (client, events) = Client::open_with_store(config("alice", 1), disk.clone()).unwrap();
    let mut alice = Dev { client, events };
    let history: Vec<Body> = alice
        .client
        .messages()
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        history,
        [
            Body::Text("from memory".into()),
            Body::Text("to memory".into())
        ]
    );
    alice.online().await;
    bob.client.send_text("alice", "still here").unwrap();
    assert_eq!(alice.message().await.body, Body::Text("still here".into()));
    // Another storage key does not open it.
    assert!(matches!(
        Client::open_with_store(config("alice", 9), disk),
        Err(ClientError::Sealed)
    ));
}

/// Forwarding (SPEC §16.2): a forwarded copy carries the count inside the encrypted content,
/// one more than the message it copies; a forward goes to at most 5 chats at once, and to 1
/// once the message was forwarded 5 times or more (each at its boundary; a refused forward
/// queues nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_carry_their_count_and_obey_the_limits() {
    use hush_client::Conversation;
    let dir = scratch("forward");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    alice.client.send_text("bob", "pass it on").unwrap();
    let original = bob.message().await;
    assert_eq!((original.forwarded, original.is_forwarded()), (0, false));
    // Bob forwards it to Carol (and Alice): Carol sees it forwarded once.
    let to = |users: &[&str]| -> Vec<Conversation> {
        users
            .iter()
            .map(|u| Conversation::Direct(u.to_string()))
            .collect()
    };
    let ids = bob
        .client
        .forward(&original, &to(&["carol", "alice"]))
        .unwrap();
    assert_eq!(ids.len(), 2);
    let copy = carol.message().await;
    assert_eq!(copy.body, Body::Text("pass it on".into()));
    assert_eq!(copy.id, ids[0]);
    assert!(copy.is_forwarded() && !copy.forwarded_many_times());
    assert_eq!(copy.forwarded, 1);
    assert_eq!(alice.message().await.forwarded, 1);
    // The limits, at their boundaries. Six chats (the users need not exist: nothing is
    // sent when the forward is refused).
    let six = to(&["u1", "u2", "u3", "u4", "u5", "u6"]);
    let queued = bob.client.outbox_len().unwrap();
    assert!(matches!(
        bob.client.forward(&copy, &six),
        Err(ClientError::ForwardLimit { max: 5 })
    ));
    assert!(matches!(
        bob.client.forward(&copy, &[]),
        Err(ClientError::Invalid(_))
    ));
    assert_eq!(
        bob.client.outbox_len().unwrap(),
        queued,
        "a refused forward queued something"
    );
    // Forwarded four times: still five chats; the copies are "forwarded many times".
    let four = Message {
        forwarded: 4,
        ..copy.clone()
    };
    assert!(!four.forwarded_many_times());
    let five_chats = to(&["carol", "alice", "u3", "u4", "u5"]);
    assert!(matches!(
        bob.client.forward(&four, &six),
        Err(ClientError::ForwardLimit { max: 5 })
    ));
    // (u3..u5 do not exist: those copies fail at the relay; Carol's and Alice's arrive.)
    bob.client.forward(&four, &five_chats).unwrap();
    let many = carol.message().await;
    assert_eq!(many.forwarded, 5);
    assert!(many.forwarded_many_times());
    // Forwarded many times: one chat at a time.
    assert!(matches!(
        carol.client.forward(&many, &to(&["alice", "bob"])),
        Err(ClientError::ForwardLimit { max: 1 })
    ));
    carol.client.forward(&many, &to(&["bob"])).unwrap();
    let last = bob.message().await;
    assert_eq!(last.forwarded, 6);
    assert!(last.forwarded_many_times());
}

/// One-to-one sends ask the relay for device lists only when the client has none yet or
/// the relay refused a send as stale (SPEC §16.4): three messages make two `ListDevices`
/// (Bob's and Alice's own) and no more; when Bob links a tablet, Alice's next message is
/// refused once as stale, both lists are asked again, and it reaches both of Bob's devices
/// (once each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lists_are_remembered_until_the_relay_says_they_are_stale() {
    let dir = scratch("device-lists");
    let addr = relay(&dir).await;
    let alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    let lists = || metric(&addr, "hush_requests_total{kind=\"list_devices\"}");
    let stale = || metric(&addr, "hush_rejections_total{reason=\"stale_devices\"}");
    let before = lists().await;
    alice.client.send_text("bob", "one").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("one".into()));
    // Alice asks for Bob's list and her own; Bob checks the key of Alice's first message.
    let first = lists().await;
    assert_eq!(first - before, 3);
    for t in ["two", "three"] {
        alice.client.send_text("bob", t).unwrap();
        assert_eq!(bob.message().await.body, Body::Text(t.into()));
    }
    assert_eq!(lists().await, first, "no more lists for later messages");
    assert_eq!(stale().await, 0);

    let mut tablet = open_with(&dir, &addr, "bob", [3; 32], |c| {
        c.device = 2;
        c.db_path = dir.join("bob-tablet.db");
    })
    .unwrap();
    tablet
        .client
        .set_link(bob.client.link_device(2, tablet.client.identity_key()));
    tablet.online().await;
    alice.client.send_text("bob", "four").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("four".into()));
    assert_eq!(tablet.message().await.body, Body::Text("four".into()));
    assert_eq!(stale().await, 1);
    // Alice asks for both lists again; the tablet checks the key of Alice's first message.
    let again = lists().await;
    assert_eq!(again - first, 3, "both lists asked again after the refusal");
    // The refused envelope was not stored: the next message each device shows is "five".
    alice.client.send_text("bob", "five").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("five".into()));
    assert_eq!(tablet.message().await.body, Body::Text("five".into()));
    assert_eq!(lists().await, again);
    assert_eq!(stale().await, 1);
}

/// SPEC §17 end to end: a text Bob receives is reportable, and his report reaches the
/// relay's operator with the message, once; Alice cannot report her own message; a text
/// whose franking does not hold (none, or a commitment it does not open) is dropped, so
/// every message shown can be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_messages_can_be_reported_and_unfranked_ones_are_not_shown() {
    let dir = scratch("franking");
    let addr = relay(&dir).await;
    let alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    for d in [&alice, &bob] {
        d.online().await;
    }
    alice.client.send_text("bob", "an abusive message").unwrap();
    let m = bob.message().await;
    assert!(m.reportable);
    bob.client.report(&m, "threats", "I agree").await.unwrap();
    bob.client.report(&m, "threats", "I agree").await.unwrap();
    // Alice's own copy is not a received message.
    let own = alice
        .client
        .messages()
        .unwrap()
        .into_iter()
        .find(|x| x.id == m.id)
        .unwrap();
    assert!(!own.reportable);
    assert!(matches!(
        alice.client.report(&own, "", "I agree").await,
        Err(ClientError::Unknown(_))
    ));
    let store = hush_relay::SqliteStore::open(&dir.join("relay.db")).unwrap();
    let reports = hush_relay::Store::reports(&store).await.unwrap();
    assert_eq!(reports.len(), 1, "kept once");
    let r = &reports[0];
    assert_eq!(
        (r.sender.user.as_str(), r.reporter.user.as_str()),
        ("alice", "bob")
    );
    assert_eq!(
        (r.reason.as_str(), r.consent.as_str()),
        ("threats", "I agree")
    );
    let content = pc::Content::decode(&r.content[..]).unwrap();
    assert_eq!(
        content.body,
        Some(pc::content::Body::Text("an abusive message".into()))
    );
    // A peer that sends a text without franking, and one whose commitment does not open.
    let mut peer = Peer {
        raw: Raw::connect(&addr, "mallory").await,
        user: "mallory".into(),
        sessions: Default::default(),
    };
    peer.start_session("bob").await;
    // No franking, a commitment that does not open, and a franked content that is not
    // canonical (a second text after the committed one, which a reader would show).
    for (commitment, padded) in [(vec![], false), (vec![7; 32], false), (vec![], true)] {
        let mut mid = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut mid);
        let content = pc::Content {
            message_id: mid.to_vec(),
            sent_ms: 1,
            body: Some(pc::content::Body::Text("unaccountable".into())),
            sync: None,
            forwarded: 0,
            franking_key: vec![],
        };
        let (plaintext, commitment) = if padded {
            let mut committed = content.encode_to_vec();
            committed.extend_from_slice(&[0x1a, 0x05]);
            committed.extend_from_slice(b"abuse");
            let key = hush_crypto::franking::FrankingKey::generate(&mut rand::rng());
            let cf = hush_crypto::franking::commit(&key, &committed).to_vec();
            committed.extend_from_slice(&[0x7a, 0x20]);
            committed.extend_from_slice(key.expose());
            (committed, cf)
        } else if commitment.is_empty() {
            (content.encode_to_vec(), commitment)
        } else {
            (franked(&content).0, commitment)
        };
        let m = peer
            .sessions
            .get_mut("bob")
            .unwrap()
            .encrypt(&plaintext)
            .unwrap();
        let payload = pc::Payload {
            kind: Some(pc::payload::Kind::Session(m.to_bytes())),
        };
        peer.raw
            .send_franked("bob", &mid, payload.encode_to_vec(), commitment)
            .await;
        assert_eq!(
            bob.dropped().await,
            DropReason::Undecryptable(hush_client::Undecryptable::Franking)
        );
    }
    // And a franked one from the same peer is shown.
    peer.send_over_session("bob", pc::content::Body::Text("accountable".into()))
        .await;
    assert_eq!(bob.message().await.body, Body::Text("accountable".into()));
}
