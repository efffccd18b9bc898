//! The relay against real WebSocket clients on loopback: authentication, prekeys, mailboxes,
//! receipts, presence, limits and bad input, restarts, and a scan of the database for
//! plaintext.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use hush_relay_protocol::device_list;
async fn authentication_rules(b: Backend) {
    let relay = start(b.db("auth").await, |_| {}).await;
    let (_, alice) = registered(&relay, "alice").await;
    // Re-authenticating with the same key works; another key for the same device does not.
    let mut again = connect(&relay).await;
    assert!(matches!(
        again.auth(&alice, "alice", 1, None).await,
        Out::Authenticated(proto::Authenticated {
            registered: false,
            checks_device_lists: true
        })
    ));
    let mallory = IdentityKeyPair::generate(&mut rand::rng());
    let mut m = connect(&relay).await;
    assert_eq!(
        code(&m.auth(&mallory, "alice", 1, None).await),
        ErrorCode::AuthFailed
    );
    // A second device of an existing user needs a link from an existing device.
    let mut m = connect(&relay).await;
    assert_eq!(
        code(&m.auth(&mallory, "alice", 2, None).await),
        ErrorCode::Forbidden
    );
    let mut m = connect(&relay).await;
    let forged = proto::DeviceLink {
        linking_device_id: 1,
        signature: mallory
            .sign(&signed::link_message(
                "alice",
                2,
                mallory.public().as_bytes(),
            ))
            .to_bytes()
            .to_vec(),
    };
    assert_eq!(
        code(&m.auth(&mallory, "alice", 2, Some(forged)).await),
        ErrorCode::Forbidden
    );
    let phone = IdentityKeyPair::generate(&mut rand::rng());
    let link = proto::DeviceLink {
        linking_device_id: 1,
        signature: alice
            .sign(&signed::link_message("alice", 2, phone.public().as_bytes()))
            .to_bytes()
            .to_vec(),
    };
    let mut p = connect(&relay).await;
    assert!(matches!(
        p.auth(&phone, "alice", 2, Some(link)).await,
        Out::Authenticated(proto::Authenticated {
            registered: true,
            checks_device_lists: true
        })
    ));
    // A replayed authentication (signed for another connection's challenge) fails.
    let mut first = connect(&relay).await;
    let key = alice.public().to_bytes().to_vec();
    let sig = alice.sign(&signed::auth_message(
        &first.relay_id,
        &first.nonce,
        "alice",
        1,
        &key,
    ));
    let replay = In::Authenticate(proto::Authenticate {
        address: Some(addr("alice", 1)),
        identity_key: key,
        signature: sig.to_bytes().to_vec(),
        ..Default::default()
    });
    assert!(matches!(
        first.call(replay.clone()).await,
        Out::Authenticated(_)
    ));
    let mut second = connect(&relay).await;
    assert_eq!(code(&second.call(replay).await), ErrorCode::AuthFailed);
    assert!(
        second.recv_raw().await.is_none(),
        "the relay closes after a failed authentication"
    );
    // Anything before authenticating is refused, and the connection closed.
    let mut early = connect(&relay).await;
    assert_eq!(
        code(&early.call(In::Ping(proto::Ping {})).await),
        ErrorCode::Unauthenticated
    );
    // Garbage.
    let mut g = connect(&relay).await;
    g.send_bytes(vec![0xff, 0x01, 0x02]).await;
    let f = g.recv_raw().await.unwrap();
    assert_eq!(code(&f.body.unwrap()), ErrorCode::Malformed);
    relay.stop().await;
}

async fn device_list_and_reinstall_with_a_new_key(b: Backend) {
    let relay = start(b.db("devices").await, |_| {}).await;
    let (mut alice, alice_id) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let phone = IdentityKeyPair::generate(&mut rand::rng());
    let mut p = connect(&relay).await;
    assert!(matches!(
        p.auth(
            &phone,
            "alice",
            2,
            Some(link_for(&alice_id, 1, "alice", 2, &phone))
        )
        .await,
        Out::Authenticated(_)
    ));
    assert!(matches!(
        p.call(upload_pq(&phone, 1, 3, 2, Some(5))).await,
        Out::PrekeyStatus(_)
    ));
    let list = |user: &str| {
        In::ListDevices(proto::ListDevices {
            user_id: user.into(),
        })
    };
    let Out::Devices(d) = bob.call(list("alice")).await else {
        panic!("expected devices")
    };
    let listed: Vec<(u32, Vec<u8>)> = d
        .devices
        .iter()
        .map(|k| (k.device_id, k.identity_key.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1, alice_id.public().to_bytes().to_vec()),
            (2, phone.public().to_bytes().to_vec())
        ]
    );
    assert_eq!(code(&bob.call(list("nobody")).await), ErrorCode::NotFound);
    assert_eq!(code(&bob.call(list("")).await), ErrorCode::Malformed);

    // The phone is reinstalled with a new key: it may take its device id back only with a
    // link from another device of the user, not its own old key nor a stranger's.
    let reinstalled = IdentityKeyPair::generate(&mut rand::rng());
    let mut r = connect(&relay).await;
    assert_eq!(
        code(&r.auth(&reinstalled, "alice", 2, None).await),
        ErrorCode::AuthFailed
    );
    let mut r = connect(&relay).await;
    assert_eq!(
        code(
            &r.auth(
                &reinstalled,
                "alice",
                2,
                Some(link_for(&phone, 2, "alice", 2, &reinstalled))
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    let mut r = connect(&relay).await;
    assert_eq!(
        code(
            &r.auth(
                &reinstalled,
                "alice",
                2,
                Some(link_for(&reinstalled, 1, "alice", 2, &reinstalled))
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    let mut r = connect(&relay).await;
    assert!(matches!(
        r.auth(
            &reinstalled,
            "alice",
            2,
            Some(link_for(&alice_id, 1, "alice", 2, &reinstalled))
        )
        .await,
        Out::Authenticated(proto::Authenticated {
            registered: true,
            checks_device_lists: true
        })
    ));
    // The old installation's connection is replaced, its prekeys are gone, and the list
    // shows the new key.
    let f = p.recv_raw().await.unwrap();
    assert_eq!(code(&f.body.unwrap()), ErrorCode::Forbidden);
    assert_eq!(
        code(
            &bob.call(In::FetchBundle(proto::FetchBundle {
                address: Some(addr("alice", 2))
            }))
            .await
        ),
        ErrorCode::NotFound
    );
    let Out::Devices(d) = alice.call(list("alice")).await else {
        panic!("expected devices")
    };
    assert_eq!(
        d.devices[1].identity_key,
        reinstalled.public().to_bytes().to_vec()
    );
    // The old key no longer authenticates.
    let mut old = connect(&relay).await;
    assert_eq!(
        code(&old.auth(&phone, "alice", 2, None).await),
        ErrorCode::AuthFailed
    );
    // The old KEM prekeys went with the rest: a classical upload by the new installation
    // gives bundles without one.
    assert!(matches!(
        r.call(upload(&reinstalled, 1, 0)).await,
        Out::PrekeyStatus(proto::PrekeyStatus {
            kem_prekeys: 0,
            last_resort_kem_prekey: false,
            ..
        })
    ));
    let Out::Bundle(b) = bob
        .call(In::FetchBundle(proto::FetchBundle {
            address: Some(addr("alice", 2)),
        }))
        .await
    else {
        panic!()
    };
    assert!(b.kem_prekey.is_none());
    relay.stop().await;
}

async fn registration_token(b: Backend) {
    let relay = start(b.db("token").await, |c| {
        c.registration_token = Some(b"let me in".to_vec().into())
    })
    .await;
    let id = IdentityKeyPair::generate(&mut rand::rng());
    let mut c = connect(&relay).await;
    assert_eq!(code(&c.auth(&id, "u", 1, None).await), ErrorCode::Forbidden);
    let mut c = connect(&relay).await;
    let key = id.public().to_bytes().to_vec();
    let sig = id.sign(&signed::auth_message(&c.relay_id, &c.nonce, "u", 1, &key));
    let ok = c
        .call(In::Authenticate(proto::Authenticate {
            address: Some(addr("u", 1)),
            identity_key: key,
            signature: sig.to_bytes().to_vec(),
            registration_token: b"let me in".to_vec(),
            link: None,
        }))
        .await;
    assert!(matches!(ok, Out::Authenticated(_)));
    relay.stop().await;
}

async fn prekey_directory(b: Backend) {
    let relay = start(b.db("prekeys").await, |c| c.prekey_low_watermark = 3).await;
    let (mut bob, bob_id) = registered(&relay, "bob").await;
    // A signed prekey signed by someone else is refused.
    let other = IdentityKeyPair::generate(&mut rand::rng());
    assert_eq!(
        code(&bob.call(upload(&other, 1, 0)).await),
        ErrorCode::BadSignature
    );
    let Out::PrekeyStatus(s) = bob.call(upload(&bob_id, 1, 5)).await else {
        panic!()
    };
    assert_eq!((s.one_time_prekeys, s.low), (5, false));
    let (mut alice, _) = registered(&relay, "alice").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let Out::Bundle(b) = alice
            .call(In::FetchBundle(proto::FetchBundle {
                address: Some(addr("bob", 1)),
            }))
            .await
        else {
            panic!()
        };
        assert_eq!(b.identity_key, bob_id.public().to_bytes().to_vec());
        assert!(
            seen.insert(b.one_time_prekey.unwrap().id),
            "a one-time prekey was handed out twice"
        );
    }
    // Stock exhausted: the signed prekey alone.
    let Out::Bundle(b) = alice
        .call(In::FetchBundle(proto::FetchBundle {
            address: Some(addr("bob", 1)),
        }))
        .await
    else {
        panic!()
    };
    assert!(b.one_time_prekey.is_none());
    assert_eq!(b.signed_prekey_id, 1);
    // Bob, still connected, heard when his stock dropped below the watermark (3).
    let live = bob
        .expect_push(|b| {
            if let Out::PrekeyStatus(s) = b {
                Some(*s)
            } else {
                None
            }
        })
        .await;
    assert!(live.low && live.one_time_prekeys < 3, "{live:?}");
    // Bob is told his stock is low when he reconnects.
    let mut bob2 = connect(&relay).await;
    bob2.auth(&bob_id, "bob", 1, None).await;
    let status = bob2
        .expect_push(|b| {
            if let Out::PrekeyStatus(s) = b {
                Some(*s)
            } else {
                None
            }
        })
        .await;
    assert_eq!((status.one_time_prekeys, status.low), (0, true));
    // Unknown device.
    assert_eq!(
        code(
            &alice
                .call(In::FetchBundle(proto::FetchBundle {
                    address: Some(addr("nobody", 1))
                }))
                .await
        ),
        ErrorCode::NotFound
    );
    relay.stop().await;
}

/// Post-quantum prekeys (SPEC §5.3, §14.2): signatures checked on upload, one-time KEM
/// prekeys handed out once each and then the last-resort one, stock and caps, and a
/// post-quantum signed prekey never stored without a last-resort KEM prekey.
async fn post_quantum_prekey_directory(b: Backend) {
    use hush_sessions::Suite;
    let relay = start(b.db("pq_prekeys").await, |c| {
        c.prekey_low_watermark = 2;
        c.max_one_time_kem_prekeys = 4;
        c.max_kem_prekeys_per_upload = 3;
    })
    .await;
    let (mut bob, bob_id) = registered(&relay, "bob").await;
    let (mut alice, alice_id) = registered(&relay, "alice").await;
    let fetch = |who: &'static str| {
        In::FetchBundle(proto::FetchBundle {
            address: Some(addr(who, 1)),
        })
    };
    // A post-quantum signed prekey alone is refused: its bundles would lack the KEM prekey
    // it promises. Nothing is stored.
    let refused = bob.call(upload_pq(&bob_id, 1, 2, 0, None)).await;
    assert_eq!(code(&refused), ErrorCode::Malformed, "{refused:?}");
    assert_eq!(code(&alice.call(fetch("bob")).await), ErrorCode::NotFound);
    // KEM prekeys signed by someone else, with a bad key, or too many at once.
    let other = IdentityKeyPair::generate(&mut rand::rng());
    let In::UploadPrekeys(mut forged) = upload_pq(&bob_id, 1, 0, 1, Some(9)) else {
        unreachable!()
    };
    forged.kem_prekeys[0] = kem_prekey(&other, 20_000);
    assert_eq!(
        code(&bob.call(In::UploadPrekeys(forged.clone())).await),
        ErrorCode::BadSignature
    );
    forged.kem_prekeys.clear();
    forged.last_resort_kem_prekey = Some(kem_prekey(&other, 9));
    assert_eq!(
        code(&bob.call(In::UploadPrekeys(forged.clone())).await),
        ErrorCode::BadSignature
    );
    let mut bad_key = kem_prekey(&bob_id, 9);
    bad_key.key[0] = 0xff;
    bad_key.key[1] |= 0x0f;
    forged.last_resort_kem_prekey = Some(bad_key);
    assert_eq!(
        code(&bob.call(In::UploadPrekeys(forged)).await),
        ErrorCode::InvalidKey
    );
    assert_eq!(
        code(&bob.call(upload_pq(&bob_id, 1, 0, 4, Some(9))).await),
        ErrorCode::TooLarge,
        "4 KEM prekeys in one upload, over max_kem_prekeys_per_upload (3)"
    );
    assert_eq!(code(&alice.call(fetch("bob")).await), ErrorCode::NotFound);
    // At the limit: 3 one-time KEM prekeys (20000..20002) and last-resort KEM prekey 9.
    let Out::PrekeyStatus(s) = bob.call(upload_pq(&bob_id, 1, 3, 3, Some(9))).await else {
        panic!()
    };
    assert_eq!(
        (
            s.one_time_prekeys,
            s.kem_prekeys,
            s.last_resort_kem_prekey,
            s.low
        ),
        (3, 3, true, false)
    );
    // The stock cap (4): one more fits, two more do not (and nothing of them is kept).
    let In::UploadPrekeys(mut more) = upload_pq(&bob_id, 1, 0, 2, None) else {
        unreachable!()
    };
    more.signed_prekey.clear();
    more.signed_prekey_signature.clear();
    more.signed_prekey_id = 0;
    for (i, k) in more.kem_prekeys.iter_mut().enumerate() {
        *k = kem_prekey(&bob_id, 30_000 + i as u32);
    }
    assert_eq!(
        code(&bob.call(In::UploadPrekeys(more.clone())).await),
        ErrorCode::TooLarge
    );
    more.kem_prekeys.truncate(1);
    let Out::PrekeyStatus(s) = bob.call(In::UploadPrekeys(more)).await else {
        panic!()
    };
    assert_eq!(s.kem_prekeys, 4);
    // Four fetches get the four one-time KEM prekeys once each, lowest id first; then every
    // bundle carries the last-resort one. Each bundle verifies as post-quantum.
    let mut kem_ids = vec![];
    for _ in 0..6 {
        let Out::Bundle(bundle) = alice.call(fetch("bob")).await else {
            panic!()
        };
        assert_eq!(session_bundle(&bundle).verify(), Ok(Suite::PostQuantum));
        kem_ids.push(bundle.kem_prekey.unwrap().id);
    }
    assert_eq!(kem_ids, [20_000, 20_001, 20_002, 30_000, 9, 9]);
    // Bob heard his KEM stock run low (below 2), with the last-resort key still there
    // (skipping the status he was sent on connecting, before his first upload).
    let live = bob
        .expect_push(|b| match b {
            Out::PrekeyStatus(s) if s.last_resort_kem_prekey && s.kem_prekeys < 2 => Some(*s),
            _ => None,
        })
        .await;
    assert!(live.low, "{live:?}");
    // A classical signed prekey (post-quantum turned off): bundles carry no KEM prekey,
    // which its signature does not promise; a post-quantum one again brings it back.
    bob.call(upload(&bob_id, 2, 0)).await;
    let Out::Bundle(bundle) = alice.call(fetch("bob")).await else {
        panic!()
    };
    assert!(bundle.kem_prekey.is_none());
    assert_eq!(session_bundle(&bundle).verify(), Ok(Suite::Classical));
    bob.call(upload_pq(&bob_id, 3, 0, 0, None)).await;
    let Out::Bundle(bundle) = alice.call(fetch("bob")).await else {
        panic!()
    };
    assert_eq!(bundle.kem_prekey.as_ref().map(|k| k.id), Some(9));
    assert_eq!(session_bundle(&bundle).verify(), Ok(Suite::PostQuantum));
    // A classical device's bundles carry no KEM prekey, verify as classical, and its low
    // notices are about one-time prekeys only.
    let Out::PrekeyStatus(s) = alice.call(upload(&alice_id, 1, 5)).await else {
        panic!()
    };
    assert_eq!(
        (s.kem_prekeys, s.last_resort_kem_prekey, s.low),
        (0, false, false)
    );
    let Out::Bundle(bundle) = bob.call(fetch("alice")).await else {
        panic!()
    };
    assert!(bundle.kem_prekey.is_none());
    assert_eq!(session_bundle(&bundle).verify(), Ok(Suite::Classical));
    relay.stop().await;
}

async fn concurrent_fetches_hand_out_each_prekey_once(b: Backend) {
    let relay = start(b.db("concurrent").await, |c| {
        c.device_rate = RateLimit::per_second(10_000)
    })
    .await;
    let (mut bob, bob_id) = registered(&relay, "bob").await;
    bob.call(upload_pq(&bob_id, 1, 40, 40, Some(7))).await;
    let mut tasks = vec![];
    for i in 0..8 {
        let addr_s = relay.addr;
        let db = relay.db.clone();
        tasks.push(tokio::spawn(async move {
            let relay = TestRelay {
                addr: addr_s,
                stop: None,
                task: tokio::spawn(async {}),
                db,
            };
            let (mut c, _) = registered(&relay, &format!("fetcher{i}")).await;
            let mut got = vec![];
            for _ in 0..6 {
                if let Out::Bundle(b) = c
                    .call(In::FetchBundle(proto::FetchBundle {
                        address: Some(addr("bob", 1)),
                    }))
                    .await
                {
                    got.push((
                        b.one_time_prekey.map(|k| k.id),
                        b.kem_prekey.expect("a KEM prekey in every bundle").id,
                    ));
                }
            }
            got
        }));
    }
    let mut all = vec![];
    let mut kem = vec![];
    for t in tasks {
        for (k, q) in t.await.unwrap() {
            all.extend(k);
            // One-time KEM prekeys, not the last-resort one (7). A fetch may find the
            // next one-time key held by a concurrent fetch (it skips it) while it still
            // gets a one-time prekey, or the reverse: the two are taken independently.
            if q != 7 {
                kem.push(q);
            }
        }
    }
    let unique_kem: std::collections::BTreeSet<_> = kem.iter().copied().collect();
    assert_eq!(
        unique_kem.len(),
        kem.len(),
        "a one-time KEM prekey was handed out twice"
    );
    assert_eq!(
        unique_kem,
        (20_000..20_040).collect(),
        "every one-time KEM prekey went out"
    );
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(
        all.len(),
        40,
        "48 fetches of 40 prekeys hand out exactly 40"
    );
    assert_eq!(unique.len(), 40, "a one-time prekey was handed out twice");
    relay.stop().await;
}

async fn offline_delivery_receipts_and_ack_rules(b: Backend) {
    let relay = start(b.db("mail").await, |_| {}).await;
    let (mut alice, alice_id) = registered(&relay, "alice").await;
    let (bob_c, bob_id) = registered(&relay, "bob").await;
    drop(bob_c); // Bob goes offline.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..3u8 {
        let Out::Sent(s) = alice.call(send_to(&[("bob", 1)], &[i], &[i; 40])).await else {
            panic!()
        };
        assert_eq!(s.message_id, vec![i]);
    }
    // Mallory cannot acknowledge Bob's envelopes.
    let (mut mallory, _) = registered(&relay, "mallory").await;
    assert!(matches!(
        mallory
            .call(In::Ack(proto::Ack {
                envelope_ids: vec![1, 2, 3]
            }))
            .await,
        Out::Done(_)
    ));
    // Bob connects: three envelopes, in order.
    let mut bob = connect(&relay).await;
    bob.auth(&bob_id, "bob", 1, None).await;
    let mut ids = vec![];
    for i in 0..3u8 {
        let e = bob.envelope().await;
        assert_eq!(
            (e.message_id.clone(), e.ciphertext.clone()),
            (vec![i], vec![i; 40])
        );
        assert_eq!(e.sender.as_ref().unwrap().user_id, "alice");
        ids.push(e.envelope_id);
    }
    bob.call(In::Ack(proto::Ack { envelope_ids: ids })).await;
    for i in 0..3u8 {
        let r = alice.receipt().await;
        assert_eq!(
            (r.kind, r.message_id.clone()),
            (proto::ReceiptKind::Delivered as i32, vec![i])
        );
    }
    // Receipts not acknowledged come again when Alice returns.
    drop(alice);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut alice = connect(&relay).await;
    alice.auth(&alice_id, "alice", 1, None).await;
    let mut pending = vec![];
    for i in 0..3u8 {
        let r = alice.receipt().await;
        assert_eq!(
            (r.message_id, r.recipient.unwrap().user_id),
            (vec![i], "bob".to_string())
        );
        pending.push(r.receipt_id);
    }
    // Acknowledged receipts are not delivered again.
    alice
        .call(In::AckReceipts(proto::AckReceipts {
            receipt_ids: pending,
        }))
        .await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut alice = connect(&relay).await;
    alice.auth(&alice_id, "alice", 1, None).await;
    alice.call(In::Ping(proto::Ping {})).await;
    assert!(
        alice
            .queue
            .iter()
            .all(|f| !matches!(f.body, Some(Out::Receipt(_)))),
        "acknowledged receipts came back"
    );
    relay.stop().await;
}

async fn restart_loses_and_duplicates_nothing(b: Backend) {
    let relay = start(b.db("restart").await, |_| {}).await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (bob_c, bob_id) = registered(&relay, "bob").await;
    drop(bob_c);
    for i in 0..20u8 {
        assert!(matches!(
            alice.call(send_to(&[("bob", 1)], &[i], &[i; 10])).await,
            Out::Sent(_)
        ));
    }
    // Bob reads and acknowledges the first five, then the relay restarts.
    let mut bob = connect(&relay).await;
    bob.auth(&bob_id, "bob", 1, None).await;
    let mut first = vec![];
    for _ in 0..5 {
        first.push(bob.envelope().await.envelope_id);
    }
    bob.call(In::Ack(proto::Ack {
        envelope_ids: first,
    }))
    .await;
    drop(bob);
    drop(alice);
    let db = relay.stop().await;
    let relay = start(db, |_| {}).await;
    let mut bob = connect(&relay).await;
    bob.auth(&bob_id, "bob", 1, None).await;
    let mut got = vec![];
    for _ in 0..15 {
        got.push(bob.envelope().await.message_id[0]);
    }
    assert_eq!(
        got,
        (5..20).collect::<Vec<u8>>(),
        "exactly the unacknowledged envelopes, in order"
    );
    bob.call(In::Ping(proto::Ping {})).await;
    assert!(
        bob.queue
            .iter()
            .all(|f| !matches!(f.body, Some(Out::Envelope(_)))),
        "no duplicates"
    );
    relay.stop().await;
}

async fn multi_recipient_limits_and_errors(b: Backend) {
    let relay = start(b.db("multi").await, |c| {
        c.mailbox_max_count = 3;
        c.max_recipients = 4;
    })
    .await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let mut others = vec![];
    for u in ["b", "c", "d", "e"] {
        others.push(registered(&relay, u).await);
    }
    // One ciphertext for exactly the recipient cap (4), pushed to each at once.
    let four = [("b", 1), ("c", 1), ("d", 1), ("e", 1)];
    assert!(matches!(
        alice.call(send_to(&four, b"g1", b"group ciphertext")).await,
        Out::Sent(_)
    ));
    for (c, _) in &mut others {
        assert_eq!(c.envelope().await.ciphertext, b"group ciphertext");
    }
    // Over the recipient cap.
    let five: Vec<_> = (0..5).map(|i| ("b", i)).collect();
    assert_eq!(
        code(&alice.call(send_to(&five, b"x", b"y")).await),
        ErrorCode::TooManyRecipients
    );
    // Unknown recipient: nothing stored for anyone.
    assert_eq!(
        code(
            &alice
                .call(send_to(&[("b", 1), ("nobody", 1)], b"u", b"v"))
                .await
        ),
        ErrorCode::UnknownRecipient
    );
    // Mailbox cap (3): b already holds one unacknowledged envelope.
    for i in 0..2u8 {
        assert!(matches!(
            alice.call(send_to(&[("b", 1)], &[i], b"fill")).await,
            Out::Sent(_)
        ));
    }
    assert_eq!(
        code(&alice.call(send_to(&[("b", 1)], b"over", b"full")).await),
        ErrorCode::MailboxFull
    );
    // A full mailbox refuses its recipient alone: the others get the envelope now, and the
    // answer names who did not (SPEC §14.2).
    let Out::Sent(sent) = alice
        .call(send_to(&[("b", 1), ("c", 1)], b"part", b"partly"))
        .await
    else {
        panic!("a send with one full mailbox was refused for everyone")
    };
    let refused: Vec<_> = sent
        .refused
        .iter()
        .map(|a| (a.user_id.as_str(), a.device_id))
        .collect();
    assert_eq!(refused, [("b", 1)]);
    assert_eq!(others[1].0.envelope().await.ciphertext, b"partly");
    // Every recipient full: an error, and nothing stored for anyone.
    assert!(matches!(
        alice.call(send_to(&[("c", 1)], b"fill c", b"fill")).await,
        Out::Sent(_)
    ));
    assert_eq!(
        code(
            &alice
                .call(send_to(&[("b", 1), ("c", 1)], b"none", b"x"))
                .await
        ),
        ErrorCode::MailboxFull
    );
    // Oversized envelope and bad message ids.
    let big = vec![0u8; Config::default().max_envelope_bytes + 1];
    assert_eq!(
        code(&alice.call(send_to(&[("c", 1)], b"big", &big)).await),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(&alice.call(send_to(&[("c", 1)], &[0; 33], b"x")).await),
        ErrorCode::Malformed
    );
    // The connection still works.
    assert!(matches!(
        alice.call(In::Ping(proto::Ping {})).await,
        Out::Pong(_)
    ));
    relay.stop().await;
}

async fn rate_limit_answers_retry_after_and_spares_others(b: Backend) {
    let relay = start(b.db("rate").await, |c| {
        c.device_rate = RateLimit {
            per_second: 5.0,
            burst: 5.0,
        }
    })
    .await;
    let (mut flooder, _) = registered(&relay, "flooder").await;
    let (mut good, _) = registered(&relay, "good").await;
    let mut limited = None;
    for _ in 0..20 {
        if let Out::Error(e) = flooder.call(In::Ping(proto::Ping {})).await {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("the flood was never limited");
    assert_eq!(ErrorCode::try_from(e.code).unwrap(), ErrorCode::RateLimited);
    assert!(e.retry_after_ms > 0);
    assert!(
        matches!(good.call(In::Ping(proto::Ping {})).await, Out::Pong(_)),
        "another device is unaffected"
    );
    relay.stop().await;
}

async fn presence_online_last_seen_and_hidden(b: Backend) {
    let relay = start(b.db("presence").await, |_| {}).await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let (mut mallory, _) = registered(&relay, "mallory").await;
    let ask = |user: &str| {
        In::Presence(proto::PresenceQuery {
            user_id: user.into(),
        })
    };
    let presence = |out: Out| match out {
        Out::Presence(p) => (p.online, p.last_seen_ms > 0, p.hidden),
        other => panic!("{other:?}"),
    };
    // Before Bob has sent Alice anything, his presence is not hers to see: it looks
    // hidden, exactly as for a user that does not exist.
    assert_eq!(presence(alice.call(ask("bob")).await), (false, false, true));
    assert_eq!(
        presence(alice.call(ask("nobody")).await),
        (false, false, true)
    );
    // A user always sees its own.
    assert_eq!(presence(bob.call(ask("bob")).await), (true, true, false));
    // Bob writes to Alice: from then on she sees him; Mallory, a stranger, still does not.
    assert!(matches!(
        bob.call(send_to(&[("alice", 1)], b"hi", b"x")).await,
        Out::Sent(_)
    ));
    assert_eq!(presence(alice.call(ask("bob")).await), (true, true, false));
    assert_eq!(
        presence(mallory.call(ask("bob")).await),
        (false, false, true)
    );
    // Hiding hides both: not online, no last-seen time.
    bob.call(In::PresenceSettings(proto::PresenceSettings {
        hide_last_seen: true,
    }))
    .await;
    assert_eq!(presence(alice.call(ask("bob")).await), (false, false, true));
    relay.stop().await;
}

/// Presence is written at authentication and then once per `presence_interval`, on the
/// first frame after it: a frame within the interval writes nothing (the user's last-seen
/// time does not move), the first one after it does.
async fn presence_is_written_once_per_interval(b: Backend) {
    let interval = Duration::from_secs(2);
    let relay = start(b.db("presence-interval").await, |c| {
        c.presence_interval = interval;
    })
    .await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let written_at = std::time::Instant::now();
    let last_seen = |out: Out| match out {
        Out::Presence(p) => p.last_seen_ms,
        other => panic!("{other:?}"),
    };
    let ask = || {
        In::Presence(proto::PresenceQuery {
            user_id: "bob".into(),
        })
    };
    let at_auth = last_seen(bob.call(ask()).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let within = last_seen(bob.call(ask()).await);
    assert!(
        written_at.elapsed() < interval,
        "the machine stalled for the whole interval; the test cannot tell"
    );
    assert_eq!(
        within, at_auth,
        "a frame within the interval wrote presence"
    );
    tokio::time::sleep(interval).await;
    let after = last_seen(bob.call(ask()).await);
    assert!(
        after > at_auth,
        "the first frame after the interval did not"
    );
    relay.stop().await;
}

async fn database_holds_no_plaintext(b: Backend) {
    use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SignedPrekey};
    let relay = start(b.db("scan").await, |_| {}).await;
    let (mut alice, a_id) = registered(&relay, "alice").await;
    let (bob_c, b_id) = registered(&relay, "bob").await;
    drop(bob_c);
    let mut rng = rand::rng();
    let spk = SignedPrekey::generate(1, &b_id, &mut rng);
    let opk = OneTimePrekey::generate(1, &mut rng);
    let mut session = Session::initiate(
        &a_id,
        &PrekeyBundle::new(b_id.public(), &spk, Some(&opk)),
        None,
        &mut rng,
    )
    .unwrap();
    let secret = b"THE PLAINTEXT THAT MUST NEVER REACH THE RELAY";
    for i in 0..5u8 {
        let ct = session.encrypt(secret).unwrap().to_bytes();
        assert!(matches!(
            alice.call(send_to(&[("bob", 1)], &[i], &ct)).await,
            Out::Sent(_)
        ));
    }
    drop(alice);
    let db = relay.stop().await;
    let files = db.dump().await;
    let hex_secret = hex::encode(secret);
    for f in &files {
        assert!(
            !f.windows(hex_secret.len())
                .any(|w| w == hex_secret.as_bytes()),
            "plaintext (hex) found in the database"
        );
    }
    let total: usize = files.iter().map(Vec::len).sum();
    assert!(total > 0);
    for f in &files {
        assert!(
            !f.windows(secret.len()).any(|w| w == secret),
            "plaintext found in the database"
        );
        assert!(
            !f.windows(16).any(|w| w == &secret[..16]),
            "plaintext fragment found in the database"
        );
    }
}

async fn health_and_metrics(b: Backend) {
    let relay = start(b.db("http").await, |_| {}).await;
    let (mut a, _) = registered(&relay, "a").await;
    a.call(In::Ping(proto::Ping {})).await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/metrics", "hush_connections"),
    ] {
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
        assert!(out.contains(needle), "{path}: {out}");
    }
    relay.stop().await;
}

fn get(id: &str, range: Option<&str>) -> Vec<u8> {
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    format!("GET /v1/blobs/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{range}\r\n")
        .into_bytes()
}

async fn attachment_blobs(b: Backend) {
    let relay = start(b.db("blobs").await, |c| c.max_blob_bytes = 1000).await;
    let (mut c, _) = registered(&relay, "uploader").await;
    let Out::UploadToken(t) = c.call(In::UploadToken(proto::UploadTokenRequest {})).await else {
        panic!()
    };
    let blob: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    // No token, or a forged one: refused.
    assert_eq!(http(&relay, post(None, &blob)).await.0, 401);
    assert_eq!(http(&relay, post(Some(&[7; 32]), &blob)).await.0, 401);
    let (code, _, body) = http(&relay, post(Some(&t.token), &blob)).await;
    assert_eq!(code, 201);
    let id = hush_crypto::hash::sha256(&[&blob])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{{\"id\":\"{id}\",\"size\":700}}")
    );
    // A token works once.
    assert_eq!(http(&relay, post(Some(&t.token), &blob)).await.0, 401);
    // Over the cap (1000 bytes, with a fresh token).
    let Out::UploadToken(t2) = c.call(In::UploadToken(proto::UploadTokenRequest {})).await else {
        panic!()
    };
    assert_eq!(
        http(&relay, post(Some(&t2.token), &[0u8; 1001])).await.0,
        413
    );
    let Out::UploadToken(t3) = c.call(In::UploadToken(proto::UploadTokenRequest {})).await else {
        panic!()
    };
    assert_eq!(
        http(&relay, post(Some(&t3.token), &[0u8; 1000])).await.0,
        201
    );
    // Download: whole, with immutable caching headers.
    let (code, head, body) = http(&relay, get(&id, None)).await;
    assert_eq!(code, 200);
    assert_eq!(body, blob);
    let lower = head.to_lowercase();
    assert!(
        lower.contains("cache-control: public, max-age=31536000, immutable"),
        "{head}"
    );
    assert!(lower.contains("accept-ranges: bytes"), "{head}");
    // Ranges.
    let (code, head, body) = http(&relay, get(&id, Some("bytes=10-19"))).await;
    assert_eq!(code, 206);
    assert_eq!(body, blob[10..20]);
    assert!(
        head.to_lowercase()
            .contains("content-range: bytes 10-19/700"),
        "{head}"
    );
    let (code, _, body) = http(&relay, get(&id, Some("bytes=-5"))).await;
    assert_eq!((code, body), (206, blob[695..].to_vec()));
    let (code, _, body) = http(&relay, get(&id, Some("bytes=690-"))).await;
    assert_eq!((code, body), (206, blob[690..].to_vec()));
    assert_eq!(http(&relay, get(&id, Some("bytes=700-800"))).await.0, 416);
    assert_eq!(http(&relay, get(&id, Some("bytes=5-2"))).await.0, 416);
    // Unknown and malformed ids.
    assert_eq!(http(&relay, get(&"0".repeat(64), None)).await.0, 404);
    assert_eq!(http(&relay, get("../relay.db", None)).await.0, 404);
    relay.stop().await;
}

async fn graceful_shutdown_tells_clients_and_keeps_acknowledged_mail(b: Backend) {
    let relay = start(b.db("shutdown").await, |_| {}).await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (bob_c, bob_id) = registered(&relay, "bob").await;
    drop(bob_c);
    assert!(matches!(
        alice.call(send_to(&[("bob", 1)], b"m", b"queued")).await,
        Out::Sent(_)
    ));
    let stopping = tokio::spawn(relay.stop());
    // The connected client is told, with a fatal SHUTTING_DOWN frame.
    let f = alice.recv_raw().await.expect("a frame before closing");
    let Some(Out::Error(e)) = f.body else {
        panic!("expected an error frame, got {f:?}")
    };
    assert_eq!(
        (ErrorCode::try_from(e.code).unwrap(), e.fatal),
        (ErrorCode::ShuttingDown, true)
    );
    let db = stopping.await.unwrap();
    // What was acknowledged as sent is there after the restart.
    let relay = start(db, |_| {}).await;
    let mut bob = connect(&relay).await;
    bob.auth(&bob_id, "bob", 1, None).await;
    assert_eq!(bob.envelope().await.ciphertext, b"queued");
    relay.stop().await;
}

async fn built_in_tls(b: Backend) {
    use tokio_rustls::rustls;
    let db = b.db("tls").await;
    let dir = db.path.parent().unwrap().to_path_buf();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let files = hush_relay::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let relay = start(db, |c| c.tls = Some(files)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/v1/ws", tls)
        .await
        .unwrap();
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        panic!("no challenge over TLS")
    };
    assert!(matches!(
        proto::ServerFrame::decode(&b[..]).unwrap().body,
        Some(Out::Challenge(_))
    ));
    // Plain WebSocket to the TLS port fails.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", relay.addr))
            .await
            .is_err()
    );
    relay.stop().await;
}

async fn idle_and_unauthenticated_connections_time_out(b: Backend) {
    let relay = start(b.db("idle").await, |c| {
        c.auth_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(500);
        // Mailbox polls (as with several nodes) must not keep a silent connection open.
        c.poll_interval = Some(Duration::from_millis(50));
    })
    .await;
    // Never authenticates: a TIMEOUT error frame, then the connection closes.
    let mut silent = connect(&relay).await;
    let f = silent.recv_raw().await.unwrap();
    assert_eq!(code(&f.body.unwrap()), ErrorCode::Timeout);
    assert!(silent.recv_raw().await.is_none());
    // Authenticated but idle: the same after the idle timeout.
    let (mut idle, _) = registered(&relay, "idle").await;
    let f = idle
        .expect_push(|b| {
            if let Out::Error(e) = b {
                Some(e.clone())
            } else {
                None
            }
        })
        .await;
    assert_eq!(
        (ErrorCode::try_from(f.code).unwrap(), f.fatal),
        (ErrorCode::Timeout, true)
    );
    relay.stop().await;
}

/// Opens `raw` TCP connections that never start the WebSocket handshake and `half` that stop
/// after the challenge, then drops them all.
async fn open_and_drop(relay: &TestRelay, raw: usize, half: usize) {
    // Raw sockets from another loopback address (the pair's own address keeps its
    // allowance of pending sockets, `max_pending_per_ip`).
    let mut tcp = vec![];
    for _ in 0..raw {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(([127, 0, 0, 3], 0).into()).unwrap();
        if let Ok(s) = s.connect(relay.addr).await {
            tcp.push(s);
        }
    }
    let mut challenged = vec![];
    for _ in 0..half {
        challenged.push(connect(relay).await);
    }
    drop(tcp);
    drop(challenged);
}

async fn many_connections_opened_and_dropped_leave_others_unaffected(b: Backend) {
    let relay = start(b.db("churn").await, |c| {
        c.ip_rate = RateLimit::per_second(100_000)
    })
    .await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    // 20 rounds of 150: 3,000 connections opened and dropped, the pair checked after each.
    for round in 0..20 {
        open_and_drop(&relay, 100, 50).await;
        assert!(matches!(
            alice
                .call(send_to(&[("bob", 1)], &[round], b"still here"))
                .await,
            Out::Sent(_)
        ));
        assert_eq!(bob.envelope().await.message_id, vec![round]);
    }
    relay.stop().await;
}

/// Misbehaving clients while a well-behaved pair keeps exchanging envelopes: truncated,
/// garbage, text, oversized and half-sent frames, silent half-open connections, forged and replayed
/// authentication, a prekey upload signed by someone else, acknowledgements of others'
/// envelopes, a send over the recipient cap, a blob over its cap, a rate flood and
/// connection churn. Each misbehaviour gets its documented answer, and the pair, and an
/// offline recipient's queued mail, lose nothing.
async fn hostile_clients_do_not_disturb_a_well_behaved_pair(b: Backend) {
    let relay = start(b.db("hostile").await, |c| {
        c.auth_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_millis(1500);
        c.max_frame_bytes = 64 * 1024;
        c.max_blob_bytes = 1000;
        // Per device: the pair stays under it (about 80 frames a second each), a flood does
        // not. Every client here shares 127.0.0.1, so the per-address limit is out of the way.
        c.device_rate = RateLimit::per_second(100);
        c.ip_rate = RateLimit::per_second(100_000);
    })
    .await;
    let (bob, _) = registered(&relay, "bob").await;
    let (alice, _) = registered(&relay, "alice").await;
    // The well-behaved pair, in the background for the whole test: Alice sends until told to
    // stop, Bob receives and acknowledges each envelope.
    let seen = std::sync::Arc::new(std::sync::Mutex::new((
        std::collections::BTreeSet::new(),
        0usize,
    )));
    let receiver = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut bob = bob;
            loop {
                let e = bob.envelope().await;
                {
                    let mut s = seen.lock().unwrap();
                    if !s.0.insert(e.message_id.clone()) {
                        s.1 += 1;
                    }
                }
                bob.call(In::Ack(proto::Ack {
                    envelope_ids: vec![e.envelope_id],
                }))
                .await;
            }
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut alice = alice;
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = alice
                    .call(send_to(&[("bob", 1)], &sent.to_be_bytes(), b"opaque"))
                    .await;
                assert!(matches!(out, Out::Sent(_)), "{out:?}");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
            sent
        }
    });
    // Carol is offline with mail queued, for the foreign acknowledgements below.
    let (mut carol, carol_id) = registered(&relay, "carol").await;
    drop(carol);
    let (mut dave, _) = registered(&relay, "dave").await;
    for i in 0..5u8 {
        assert!(matches!(
            dave.call(send_to(&[("carol", 1)], &[i], b"for carol"))
                .await,
            Out::Sent(_)
        ));
    }

    // A truncated frame after authenticating: MALFORMED, and the connection stays usable.
    let (mut t, _) = registered(&relay, "truncated").await;
    let full = proto::ClientFrame {
        request_id: 9,
        body: Some(send_to(&[("bob", 1)], b"t", b"x")),
    }
    .encode_to_vec();
    t.malformed_then_usable(Message::Binary(full[..full.len() / 2].to_vec().into()))
        .await;
    // Garbage bytes and a text frame: MALFORMED each, and still usable.
    t.malformed_then_usable(Message::Binary(vec![0xff, 0x01, 0x02, 0x80, 0x80].into()))
        .await;
    t.malformed_then_usable(Message::Text("hello".into())).await;

    // An oversized frame: refused before it is read, and the connection closed.
    let (mut big, _) = registered(&relay, "oversized").await;
    let _ = big
        .ws
        .send(Message::Binary(vec![0u8; 200 * 1024].into()))
        .await;
    let mut closed = false;
    for _ in 0..5 {
        match big.recv_raw().await {
            None => {
                closed = true;
                break;
            }
            Some(proto::ServerFrame {
                body: Some(b @ Out::Error(_)),
                ..
            }) => assert_eq!(code(&b), ErrorCode::TooLarge),
            Some(_) => {}
        }
    }
    assert!(closed, "an oversized frame ends the connection");

    let (mut after, _) = registered(&relay, "after").await;
    assert!(matches!(
        after.call(In::Ping(proto::Ping {})).await,
        Out::Pong(_)
    ));
    // Slowloris: a WebSocket frame header and a few payload bytes, then nothing. The relay
    // closes it at the idle timeout (authenticated) or the auth timeout (not).
    for authenticate in [true, false] {
        let c = if authenticate {
            registered(&relay, "slow").await.0
        } else {
            connect(&relay).await
        };
        let mut tcp = c.ws.into_inner();
        // FIN + binary, masked, 126 = 16-bit length 1000, mask key, 3 bytes of payload.
        let partial = [0x82u8, 0xfe, 0x03, 0xe8, 1, 2, 3, 4, 9, 9, 9];
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = match &mut tcp {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
            _ => panic!("plain TCP expected"),
        };
        stream.write_all(&partial).await.unwrap();
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a half-sent frame is not held open forever");
    }

    // Authentication with a forged signature, and with one replayed from another
    // connection's challenge: AUTH_FAILED, and the connection closed.
    let mallory = IdentityKeyPair::generate(&mut rand::rng());
    let mut forged = connect(&relay).await;
    let key = mallory.public().to_bytes().to_vec();
    let wrong_nonce = [7u8; 32];
    let sig = mallory.sign(&signed::auth_message(
        &forged.relay_id,
        &wrong_nonce,
        "mallory",
        1,
        &key,
    ));
    let out = forged
        .call(In::Authenticate(proto::Authenticate {
            address: Some(addr("mallory", 1)),
            identity_key: key.clone(),
            signature: sig.to_bytes().to_vec(),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(&out), ErrorCode::AuthFailed);
    assert!(
        forged.recv_raw().await.is_none(),
        "closed after a failed auth"
    );
    let first = connect(&relay).await;
    let replayed_sig = mallory.sign(&signed::auth_message(
        &first.relay_id,
        &first.nonce,
        "mallory",
        1,
        &key,
    ));
    let mut second = connect(&relay).await;
    let out = second
        .call(In::Authenticate(proto::Authenticate {
            address: Some(addr("mallory", 1)),
            identity_key: key.clone(),
            signature: replayed_sig.to_bytes().to_vec(),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(&out), ErrorCode::AuthFailed);
    // Someone else's device, with Mallory's key: refused (and Bob is not disconnected, as the
    // pair's count at the end shows).
    let mut impostor = connect(&relay).await;
    assert_eq!(
        code(&impostor.auth(&mallory, "bob", 1, None).await),
        ErrorCode::AuthFailed
    );

    let (mut m, _) = registered(&relay, "mallory").await;
    // A signed prekey signed by another identity (Bob's key is not Mallory's to use): refused.
    let other = IdentityKeyPair::generate(&mut rand::rng());
    assert_eq!(
        code(&m.call(upload(&other, 1, 5)).await),
        ErrorCode::BadSignature
    );
    // Acknowledging envelope ids that belong to others: accepted and ignored; more ids
    // than a frame may hold: refused.
    assert!(matches!(
        m.call(In::Ack(proto::Ack {
            envelope_ids: (1..1000).collect(),
        }))
        .await,
        Out::Done(_)
    ));
    assert_eq!(
        code(
            &m.call(In::Ack(proto::Ack {
                envelope_ids: (1..5000).collect(),
            }))
            .await
        ),
        ErrorCode::TooLarge
    );
    // A send to more devices than allowed: TOO_MANY_RECIPIENTS, nothing stored.
    let many: Vec<(String, u32)> = (0..257).map(|i| ("bob".to_string(), i)).collect();
    let many: Vec<(&str, u32)> = many.iter().map(|(u, d)| (u.as_str(), *d)).collect();
    assert_eq!(
        code(&m.call(send_to(&many, b"too many", b"x")).await),
        ErrorCode::TooManyRecipients
    );
    // A blob over the cap: 413.
    let Out::UploadToken(t) = m.call(In::UploadToken(proto::UploadTokenRequest {})).await else {
        panic!("no upload token")
    };
    assert_eq!(
        http(&relay, post(Some(&t.token), &[0u8; 5000])).await.0,
        413
    );
    // A flood past the device's rate: RATE_LIMITED with a Retry-After, then served again
    // once it has waited.
    for _ in 0..600 {
        m.send(In::Ping(proto::Ping {})).await;
    }
    let mut retry_after = None;
    for _ in 0..600 {
        let f = m.recv_raw().await.expect("flooder still connected");
        if let Some(Out::Error(e)) = &f.body {
            assert_eq!(ErrorCode::try_from(e.code).unwrap(), ErrorCode::RateLimited);
            assert!(e.retry_after_ms > 0);
            retry_after = Some(e.retry_after_ms);
        }
    }
    let retry_after = retry_after.expect("a flood is rate limited");
    tokio::time::sleep(Duration::from_millis(retry_after.max(1000))).await;
    assert!(matches!(
        m.call(In::Ping(proto::Ping {})).await,
        Out::Pong(_)
    ));
    // Connections opened and dropped by the hundred.
    for _ in 0..3 {
        open_and_drop(&relay, 100, 30).await;
    }

    // Carol's queued mail survived Mallory's acknowledgements.
    carol = connect(&relay).await;
    assert!(matches!(
        carol.auth(&carol_id, "carol", 1, None).await,
        Out::Authenticated(_)
    ));
    let mut for_carol = vec![];
    for _ in 0..5 {
        for_carol.push(carol.envelope().await.message_id);
    }
    assert_eq!(for_carol, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());

    // The pair saw every envelope Alice sent in all that time, each once.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert!(sent > 50, "the pair ran through the test ({sent} sent)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().0.len() < sent as usize && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.abort();
    let (got, duplicates) = seen.lock().unwrap().clone();
    assert_eq!(duplicates, 0, "no envelope arrived twice");
    assert_eq!(
        got,
        (0..sent).map(|i| i.to_be_bytes().to_vec()).collect(),
        "every envelope arrived"
    );
    relay.stop().await;
}

/// A sender that pipelines thousands of sends (one of them invalid) to a recipient that
/// does not read for a while: every valid send is answered `Sent` and the invalid one alone
/// is refused; the relay's push queue for the stalled recipient overflows, so delivery
/// falls back to reading the mailbox, and the recipient still gets every envelope once, in
/// order.
async fn pipelined_sends_and_a_stalled_reader_lose_nothing(b: Backend) {
    let relay = start(b.db("pipelined").await, |c| {
        c.device_rate = RateLimit::per_second(100_000);
        c.ip_rate = RateLimit::per_second(100_000);
        // One sender fills Bob's mailbox with thousands of envelopes on purpose.
        c.mailbox_sender_max_count = c.mailbox_max_count;
        c.mailbox_sender_max_bytes = c.mailbox_max_bytes;
    })
    .await;
    let (mut bob, bob_id) = registered(&relay, "bob").await;
    let (mut alice, _) = registered(&relay, "alice").await;
    const N: u32 = 3000;
    const BAD: u32 = 1500;
    let mut ids = Vec::new();
    for i in 0..N {
        // 8 KiB each (24 MiB in all), more than the stalled reader's socket buffers hold, so
        // its connection blocks and its push queue overflows.
        let mut ct = vec![0x5a; 8 * 1024];
        ct[..4].copy_from_slice(&i.to_be_bytes());
        if i == BAD {
            ct.clear();
        }
        let frame = proto::ClientFrame {
            request_id: 10_000 + u64::from(i),
            body: Some(send_to(&[("bob", 1)], &i.to_be_bytes(), &ct)),
        };
        alice
            .ws
            .feed(Message::Binary(frame.encode_to_vec().into()))
            .await
            .unwrap();
        ids.push(10_000 + u64::from(i));
    }
    alice.ws.flush().await.unwrap();
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < N as usize {
        let f = alice.recv_raw().await.expect("an answer for every send");
        match f.body {
            Some(Out::Sent(_)) => assert!(answered.insert(f.request_id, true).is_none()),
            Some(b @ Out::Error(_)) => {
                assert_eq!(code(&b), ErrorCode::Malformed);
                assert!(answered.insert(f.request_id, false).is_none());
            }
            _ => {}
        }
    }
    let refused: Vec<u64> = answered
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(refused, vec![10_000 + u64::from(BAD)]);
    // Bob reads only now.
    let mut last_envelope = 0;
    let mut got = Vec::new();
    let mut envelope_ids = Vec::new();
    while got.len() < (N - 1) as usize {
        let e = bob.envelope().await;
        assert!(e.envelope_id > last_envelope, "envelopes in order");
        last_envelope = e.envelope_id;
        envelope_ids.push(e.envelope_id);
        assert_eq!(e.ciphertext[..4], e.message_id[..]);
        got.push(u32::from_be_bytes(e.message_id[..].try_into().unwrap()));
        if got.len() % 100 == 0 {
            bob.send(In::Ack(proto::Ack {
                envelope_ids: vec![e.envelope_id],
            }))
            .await;
        }
    }
    assert_eq!(got, (0..N).filter(|i| *i != BAD).collect::<Vec<_>>());
    // Nothing more: a ping's answer comes before any further envelope.
    let id = bob.send(In::Ping(proto::Ping {})).await;
    loop {
        let f = bob.recv_raw().await.expect("pong");
        assert!(!matches!(f.body, Some(Out::Envelope(_))), "no duplicate");
        if f.request_id == id {
            break;
        }
    }
    // Bob acknowledges everything, goes away, and reconnects while Alice's next sends are
    // being stored: what was queued before he connected comes from the mailbox, what commits
    // after from the push, and nothing twice.
    for chunk in envelope_ids.chunks(hush_relay_protocol::limits::MAX_ACK_IDS) {
        assert!(matches!(
            bob.call(In::Ack(proto::Ack {
                envelope_ids: chunk.to_vec()
            }))
            .await,
            Out::Done(_)
        ));
    }
    drop(bob);
    const M: u32 = 2000;
    let feeder = tokio::spawn(async move {
        for i in 0..M {
            let frame = proto::ClientFrame {
                request_id: 20_000 + u64::from(i),
                body: Some(send_to(&[("bob", 1)], &(N + i).to_be_bytes(), b"again")),
            };
            alice
                .ws
                .send(Message::Binary(frame.encode_to_vec().into()))
                .await
                .unwrap();
        }
        alice
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut bob = connect(&relay).await;
    assert!(matches!(
        bob.auth(&bob_id, "bob", 1, None).await,
        Out::Authenticated(_)
    ));
    let mut again = Vec::new();
    while again.len() < M as usize {
        let e = bob.envelope().await;
        again.push(u32::from_be_bytes(e.message_id[..].try_into().unwrap()));
    }
    assert_eq!(again, (N..N + M).collect::<Vec<_>>(), "each once, in order");
    drop(feeder.await.unwrap());
    relay.stop().await;
}

/// A send that names the device lists it was made for is stored only while they are
/// current (SPEC §14.2): a new device, a device with a new key, or a wrong digest makes it
/// `STALE_DEVICES` with nothing stored, and the sender's own list is checked alike.
async fn sends_are_checked_against_their_device_lists(b: Backend) {
    let relay = start(b.db("stale").await, |_| {}).await;
    let (mut alice, alice_id) = registered(&relay, "alice").await;
    let (mut bob, bob_id) = registered(&relay, "bob").await;
    let key = |id: &IdentityKeyPair| id.public().to_bytes();
    let digest = |user: &str, devices: &[(u32, [u8; 32])]| device_list::digest(user, devices);
    let checked = |mid: &[u8], lists: Vec<(&str, [u8; 32])>| {
        In::Send(proto::Send {
            recipients: vec![addr("bob", 1)],
            message_id: mid.to_vec(),
            ciphertext: mid.to_vec(),
            device_lists: lists
                .into_iter()
                .map(|(u, d)| proto::DeviceListCheck {
                    user_id: u.into(),
                    digest: d.to_vec(),
                })
                .collect(),
            franking_commitment: vec![],
        })
    };
    let bob_one = digest("bob", &[(1, key(&bob_id))]);
    let alice_one = digest("alice", &[(1, key(&alice_id))]);
    assert!(matches!(
        alice
            .call(checked(b"m1", vec![("bob", bob_one), ("alice", alice_one)]))
            .await,
        Out::Sent(_)
    ));
    assert_eq!(bob.envelope().await.message_id, b"m1");
    // A wrong digest, for either user.
    for lists in [
        vec![("bob", [0; 32])],
        vec![("bob", bob_one), ("alice", digest("alice", &[]))],
    ] {
        assert_eq!(
            code(&alice.call(checked(b"wrong", lists)).await),
            ErrorCode::StaleDevices
        );
    }
    // Bob links a second device: the old list is stale, the new one current.
    let tablet = IdentityKeyPair::generate(&mut rand::rng());
    let mut t = connect(&relay).await;
    assert!(matches!(
        t.auth(
            &tablet,
            "bob",
            2,
            Some(link_for(&bob_id, 1, "bob", 2, &tablet))
        )
        .await,
        Out::Authenticated(_)
    ));
    assert_eq!(
        code(&alice.call(checked(b"m2", vec![("bob", bob_one)])).await),
        ErrorCode::StaleDevices
    );
    let bob_two = digest("bob", &[(1, key(&bob_id)), (2, key(&tablet))]);
    assert!(matches!(
        alice.call(checked(b"m3", vec![("bob", bob_two)])).await,
        Out::Sent(_)
    ));
    // The stale sends stored nothing: Bob's next envelope is m3.
    assert_eq!(bob.envelope().await.message_id, b"m3");
    // The tablet is reinstalled with a new key under the same device id: stale again.
    drop(t);
    let reinstalled = IdentityKeyPair::generate(&mut rand::rng());
    let mut r = connect(&relay).await;
    assert!(matches!(
        r.auth(
            &reinstalled,
            "bob",
            2,
            Some(link_for(&bob_id, 1, "bob", 2, &reinstalled))
        )
        .await,
        Out::Authenticated(_)
    ));
    assert_eq!(
        code(&alice.call(checked(b"m4", vec![("bob", bob_two)])).await),
        ErrorCode::StaleDevices
    );
    let bob_new = digest("bob", &[(1, key(&bob_id)), (2, key(&reinstalled))]);
    assert!(matches!(
        alice.call(checked(b"m5", vec![("bob", bob_new)])).await,
        Out::Sent(_)
    ));
    assert_eq!(bob.envelope().await.message_id, b"m5");
}

on_both_backends!(
    authentication_rules,
    sends_are_checked_against_their_device_lists,
    device_list_and_reinstall_with_a_new_key,
    registration_token,
    prekey_directory,
    post_quantum_prekey_directory,
    concurrent_fetches_hand_out_each_prekey_once,
    offline_delivery_receipts_and_ack_rules,
    restart_loses_and_duplicates_nothing,
    multi_recipient_limits_and_errors,
    rate_limit_answers_retry_after_and_spares_others,
    presence_online_last_seen_and_hidden,
    presence_is_written_once_per_interval,
    database_holds_no_plaintext,
    health_and_metrics,
    attachment_blobs,
    graceful_shutdown_tells_clients_and_keeps_acknowledged_mail,
    built_in_tls,
    idle_and_unauthenticated_connections_time_out,
    many_connections_opened_and_dropped_leave_others_unaffected,
    hostile_clients_do_not_disturb_a_well_behaved_pair,
    pipelined_sends_and_a_stalled_reader_lose_nothing,
);
