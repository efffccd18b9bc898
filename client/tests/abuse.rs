//! Abusive peers and relays (issue 15) against the real SDK as the victim: each attack runs
//! beside a well-behaved sender, whose next message must still arrive within a stated bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use common::*;

/// The bound the well-behaved sender's message must arrive within while an attack runs.
const PAIR_BOUND: Duration = Duration::from_secs(2);

/// One-time prekeys kept in a device's store (the table holds ids in the clear, SPEC §16.8).
fn local_prekeys(dir: &Path, user: &str) -> (u64, u64) {
    let db = rusqlite::Connection::open(dir.join(format!("{user}.db"))).unwrap();
    db.query_row(
        "SELECT COUNT(*), COUNT(handed_out_ms) FROM one_time_prekeys",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .unwrap()
}

/// Waits until `user`'s device has uploaded one-time prekeys to the relay.
async fn uploaded_prekeys(dir: &Path, user: &str) {
    let db = rusqlite::Connection::open(dir.join(format!("{user}.db"))).unwrap();
    for _ in 0..1000 {
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE uploaded = 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{user} uploaded no one-time prekeys");
}

/// Finding 3: a stranger draining the victim's one-time prekeys as fast as it can gets only
/// the relay's hand-out rate; the victim refills within its daily budget, deletes the keys
/// handed out once their grace window has passed, and its mail is not delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prekey_drain_is_bounded_and_handed_out_keys_are_deleted() {
    let dir = scratch("abuse-prekeys");
    let addr = relay_with(&dir, |c| {
        c.prekey_handout_rate = hush_relay::RateLimit {
            per_second: 0.001,
            burst: 30.0,
        };
    })
    .await;
    let config = |user: &str| {
        let mut c = ClientConfig::new(
            format!("ws://{addr}"),
            dir.join(format!("{user}.db")),
            StorageKey::from_bytes([3; 32]),
            user,
            1,
        );
        c.prekey_batch = 10;
        c.prekey_daily_budget = 15;
        c.prekey_grace = Duration::ZERO;
        c
    };
    let (client, events) = Client::open(config("victim")).unwrap();
    let mut victim = Dev { client, events };
    victim.online().await;
    let (client, events) = Client::open(config("alice")).unwrap();
    let alice = Dev { client, events };
    alice.online().await;
    // Mallory takes bundles as fast as the relay answers.
    let mut mallory = Raw::connect(&addr, "mallory").await;
    let mut taken = 0;
    let mut fetched = 0;
    let deadline = Instant::now() + WAIT;
    while fetched < 200 {
        let Out::Bundle(b) = mallory
            .call(In::FetchBundle(pr::FetchBundle {
                address: Some(pr::Address {
                    user_id: "victim".into(),
                    device_id: 1,
                }),
            }))
            .await
        else {
            // Connected comes before the first upload is stored: until then there is no
            // bundle. After the first, none may be refused.
            if fetched == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            panic!("a bundle fetch was refused")
        };
        fetched += 1;
        taken += usize::from(b.one_time_prekey.is_some());
    }
    // The victim generated its first batch of 10 and refilled within its daily budget of
    // 15: that is all anyone could take (the relay's hand-out rate, 30, did not bind).
    assert!(taken <= 10 + 15, "{taken} one-time prekeys handed out");
    // The pair still talks at once.
    let started = Instant::now();
    alice.client.send_text("victim", "still here?").unwrap();
    let m = victim.message().await;
    assert_eq!(m.body, Body::Text("still here?".into()));
    assert!(started.elapsed() < PAIR_BOUND, "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.client.stop();
    // With a grace window of zero, handed-out keys are gone from the device: what is left
    // is the relay's stock, none of it handed out.
    let (kept, handed_out) = local_prekeys(&dir, "victim");
    assert_eq!(handed_out, 0);
    assert_eq!(kept, 10 + 15 - taken as u64, "kept {kept}, taken {taken}");
}

/// Finding 12: with the relay's id configured, the client does not sign a challenge from a
/// relay announcing another id (a relay in the middle cannot log in as it elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_announcing_another_id_gets_no_signature() {
    let dir = scratch("abuse-relay-id");
    let addr = relay(&dir).await;
    let config = |relay_id: &[u8]| {
        let mut c = ClientConfig::new(
            format!("ws://{addr}"),
            dir.join("alice.db"),
            StorageKey::from_bytes([4; 32]),
            "alice",
            1,
        );
        c.relay_id = Some(relay_id.to_vec());
        c
    };
    let (client, events) = Client::open(config(b"another-relay")).unwrap();
    let mut wrong = Dev { client, events };
    wrong.client.start();
    let error = wrong
        .next(|e| match e {
            Event::Disconnected { reason: Some(e) } => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(*error, ClientError::WrongRelay), "{error:?}");
    assert!(!wrong.client.is_connected());
    wrong.client.stop();
    drop(wrong);
    // The relay's own id (the default, "hush-relay"): connects.
    let (client, events) = Client::open(config(b"hush-relay")).unwrap();
    let right = Dev { client, events };
    right.online().await;
}

/// Finding 4, the sender's side: an envelope refused for a full mailbox waits (and is
/// delivered once there is room) while the outbox goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_does_not_hold_up_mail_to_others() {
    let dir = scratch("abuse-full-mailbox");
    let addr = relay_with(&dir, |c| {
        c.mailbox_max_count = 5;
        c.mailbox_sender_max_count = 5;
    })
    .await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    carol.online().await;
    carol.client.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Mallory fills Carol's mailbox while she is away.
    let mut mallory = Raw::connect(&addr, "mallory").await;
    for _ in 0..5 {
        mallory.send_to("carol", vec![7; 30]).await;
    }
    let to_carol = alice.client.send_text("carol", "for carol").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    alice.client.send_text("bob", "for bob").unwrap();
    let m = bob.message().await;
    assert_eq!(m.body, Body::Text("for bob".into()));
    assert!(
        started.elapsed() < PAIR_BOUND,
        "mail to Bob waited {:?} behind Carol's full mailbox",
        started.elapsed()
    );
    assert_eq!(
        alice.client.outbox_len().unwrap(),
        1,
        "Carol's message waits"
    );
    // Carol comes back: Mallory's junk is dropped, and Alice's message arrives.
    carol.client.start();
    let m = carol.message().await;
    assert_eq!((m.id, m.body), (to_carol, Body::Text("for carol".into())));
    alice
        .next(|e| match e {
            Event::Receipt {
                message_id,
                kind: hush_client::ReceiptKind::Sent,
                ..
            } if *message_id == to_carol => Some(()),
            _ => None,
        })
        .await;
}

/// Finding 4 for a group: one member's full mailbox refuses that member alone (SPEC §14.2),
/// so a group message reaches every other member at once, and later ones too; the full
/// member gets them, in order, once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_does_not_hold_up_a_group_message_to_the_others() {
    let dir = scratch("abuse-full-mailbox-group");
    let addr = relay_with(&dir, |c| {
        c.mailbox_max_count = 5;
        c.mailbox_sender_max_count = 5;
    })
    .await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    let group = alice
        .client
        .create_group("full", &["bob", "carol"])
        .await
        .unwrap();
    for d in [&mut bob, &mut carol] {
        d.joined().await;
    }
    // Sender keys are handed out with the first message: from then on each group message
    // is one envelope for both.
    alice.client.send_group_text(&group, "zero").unwrap();
    for d in [&mut bob, &mut carol] {
        assert_eq!(d.message().await.body, Body::Text("zero".into()));
    }
    carol.client.stop();
    while carol.client.is_connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mallory fills Carol's mailbox while she is away.
    let mut mallory = Raw::connect(&addr, "mallory").await;
    for _ in 0..5 {
        mallory.send_to("carol", vec![7; 30]).await;
    }
    // "first" is stored for Bob and refused for Carol in one answer (`Sent.refused`);
    // "second" goes to Bob alone while Carol's copy of "first" waits.
    let mut sent = Vec::new();
    for text in ["first", "second"] {
        let started = Instant::now();
        sent.push(alice.client.send_group_text(&group, text).unwrap());
        let m = bob.message().await;
        assert_eq!(m.body, Body::Text(text.into()));
        assert!(
            started.elapsed() < PAIR_BOUND,
            "the group message waited {:?} behind Carol's full mailbox",
            started.elapsed()
        );
    }
    assert!(
        alice.client.outbox_len().unwrap() > 0,
        "Carol's copies wait"
    );
    // Carol comes back: Mallory's junk is dropped, and both arrive, in order.
    carol.client.start();
    for text in ["first", "second"] {
        let m = carol.message().await;
        assert_eq!(m.body, Body::Text(text.into()));
    }
    // Each is "sent" once every member has it.
    for id in sent {
        alice
            .next(|e| match e {
                Event::Receipt {
                    message_id,
                    kind: hush_client::ReceiptKind::Sent,
                    ..
                } if *message_id == id => Some(()),
                _ => None,
            })
            .await;
    }
    while alice.client.outbox_len().unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finding 13: a group's create change forwarded by another member (with that member's own
/// directory and name) is refused; only the creator's own counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_creator_can_bring_a_device_into_a_new_group() {
    use hush_groups::{Group, GroupConfig, Role};
    let dir = scratch("abuse-forwarded-create");
    let addr = relay(&dir).await;
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    bob.online().await;
    let bob_key = *bob.client.identity_key();
    let mut admin = Peer {
        raw: Raw::connect(&addr, "admin").await,
        user: "admin".into(),
        sessions: Default::default(),
    };
    let mut mallory = Peer {
        raw: Raw::connect(&addr, "mallory").await,
        user: "mallory".into(),
        sessions: Default::default(),
    };
    let (_group, create) = Group::create(
        &admin.raw.id,
        &[
            (bob_key, Role::Member),
            (*mallory.raw.id.public(), Role::Member),
        ],
        GroupConfig::default(),
        &mut rand::rng(),
    )
    .unwrap();
    let gid = Group::from_create(&bob_key, &create, GroupConfig::default())
        .unwrap()
        .id()
        .to_vec();
    let bob_entry = pc::Member {
        identity_key: bob_key.to_bytes().to_vec(),
        user_id: "bob".into(),
        device_id: 1,
    };
    let control = |directory: Vec<pc::Member>, name: &str| {
        pc::content::Body::GroupControl(pc::GroupControl {
            group_id: gid.clone(),
            control: create.clone(),
            group_info: vec![],
            directory,
            name: name.into(),
        })
    };
    // Mallory, a member, forwards the create first, claiming the admin's key is her device.
    let forged = pc::Member {
        identity_key: admin.raw.id.public().to_bytes().to_vec(),
        user_id: "mallory".into(),
        device_id: 1,
    };
    mallory
        .send_content(
            "bob",
            control(vec![forged, bob_entry.clone()], "free gifts"),
        )
        .await;
    assert_eq!(
        bob.dropped().await,
        DropReason::Undecryptable(hush_client::Undecryptable::Control(
            hush_groups::ControlError::NotFromCreator
        ))
    );
    assert!(bob.client.groups().unwrap().is_empty());
    // The admin's own create is accepted, with the admin's name and directory.
    admin
        .send_content(
            "bob",
            control(vec![admin.member(), mallory.member(), bob_entry], "team"),
        )
        .await;
    let name = bob
        .next(|e| match e {
            Event::Group {
                change: GroupChange::Joined { name, .. },
                ..
            } => Some(name.clone()),
            _ => None,
        })
        .await;
    assert_eq!(name, "team");
}

/// Finding 15: a stored record that does not open (here: damaged on disk) is set aside and
/// reported; the message that needed it is dropped, and everything else goes on (the
/// client used to reconnect forever, the same envelope first each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_set_aside_and_everything_else_goes_on() {
    let dir = scratch("abuse-corrupt-record");
    let addr = relay(&dir).await;
    let alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    // Alice's first message must spend one of Bob's one-time prekeys: wait for his upload.
    uploaded_prekeys(&dir, "bob").await;
    alice.client.send_text("bob", "first").unwrap();
    assert_eq!(bob.message().await.body, Body::Text("first".into()));
    bob.client.stop();
    bob.next(|e| matches!(e, Event::Disconnected { .. }).then_some(()))
        .await;
    // Bob is away; his session with Alice, and a draft he queued, are damaged on disk.
    let queued = bob.client.send_text("carol", "never sent").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let db = rusqlite::Connection::open(dir.join("bob.db")).unwrap();
        let n = db
            .execute(
                "UPDATE sessions SET sealed = zeroblob(80) WHERE user_id = 'alice'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        let n = db
            .execute("UPDATE outbox SET draft = zeroblob(80)", [])
            .unwrap();
        assert_eq!(n, 1);
    }
    alice.client.send_text("bob", "second").unwrap();
    carol.client.send_text("bob", "from carol").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.client.start();
    // The outbox entry and the session are set aside, each reported once.
    let mut set_aside = Vec::new();
    let mut dropped = Vec::new();
    // Carol's message and Alice's may arrive in either order (they come from two devices);
    // wait for both.
    let mut from_carol = None;
    while from_carol.is_none() || dropped.is_empty() {
        match bob.next(|e| Some(e.clone())).await {
            Event::RecordSetAside { record } => set_aside.push(record),
            Event::Dropped { from, reason } => dropped.push((from.user, reason)),
            Event::Message(m) => from_carol = Some(m),
            _ => {}
        }
    }
    let from_carol = from_carol.expect("loop ends with it");
    assert_eq!(from_carol.body, Body::Text("from carol".into()));
    assert!(set_aside.contains(&hush_client::StoredRecord::Outbox(queued.to_vec())));
    assert!(set_aside.contains(&hush_client::StoredRecord::Session(
        hush_client::Address::new("alice", 1)
    )));
    // Alice's second message needed the damaged session: dropped (it is a prekey message
    // whose one-time prekey the first one used), not retried forever.
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, "alice");
    // Bob's queue is clear, and new mail goes out.
    assert_eq!(bob.client.outbox_len().unwrap(), 0);
    bob.client.send_text("carol", "back").unwrap();
    assert_eq!(carol.message().await.body, Body::Text("back".into()));
    // What was set aside is kept in the store.
    let kept: i64 = rusqlite::Connection::open(dir.join("bob.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM set_aside", [], |r| r.get(0))
        .unwrap();
    assert!(kept >= 2, "{kept}");
}

/// Finding 1, end to end: read receipts are messages from the reader's device; one naming
/// messages that were never sent to its device (a stranger's forgery, thousands of ids at
/// a time) changes no tick, and the real reader's receipt still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_read_receipts_change_nothing() {
    let dir = scratch("abuse-forged-reads");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    alice.online().await;
    bob.online().await;
    let id = alice.client.send_text("bob", "hello").unwrap();
    let m = bob.message().await;
    // Mallory claims, again and again, to have read Alice's message (and 1,023 others).
    let mut mallory = Peer {
        raw: Raw::connect(&addr, "mallory").await,
        user: "mallory".into(),
        sessions: Default::default(),
    };
    for _ in 0..10 {
        let mut ids = vec![id.to_vec()];
        ids.extend((0..1023u32).map(|i| [i.to_be_bytes(); 4].concat()));
        mallory
            .send_content(
                "alice",
                pc::content::Body::Read(pc::ReadReceipts { message_ids: ids }),
            )
            .await;
    }
    // Bob really reads it: Alice's only "read" tick is Bob's, and it arrives promptly.
    let started = Instant::now();
    bob.client.mark_read(&m.from, &[m.id]).unwrap();
    let (kind, by) = alice
        .next(|e| match e {
            Event::Receipt {
                message_id,
                kind: hush_client::ReceiptKind::Read,
                by,
                ..
            } if *message_id == id => Some((hush_client::ReceiptKind::Read, by.clone())),
            Event::Receipt { by, .. } if by.user == "mallory" => {
                panic!("a forged receipt counted")
            }
            _ => None,
        })
        .await;
    assert_eq!(
        (kind, by.user.as_str()),
        (hush_client::ReceiptKind::Read, "bob")
    );
    assert!(started.elapsed() < PAIR_BOUND, "{:?}", started.elapsed());
    let ticks = alice.client.receipts(&id).unwrap();
    assert!(
        ticks.iter().all(|(a, _, _)| a.user != "mallory"),
        "{ticks:?}"
    );
}

/// Finding 2 (device bomb) with the real SDK as the victim: a stranger adds devices at full
/// speed until the relay's cap (`max_devices_per_user`, default 16) refuses the next, and
/// writes to the victim from them; the victim's receive pipeline answers for that user's
/// whole device list at once, its reply to the stranger does not hold up its outbox, and
/// a friend's messages keep arriving within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_bomb_stops_at_the_cap_and_the_victim_keeps_its_mail() {
    let dir = scratch("abuse-device-bomb");
    let addr = relay(&dir).await;
    let cap = u32::try_from(hush_relay::Config::default().max_devices_per_user).unwrap();
    let mut victim = open(&dir, &addr, "victim", [5; 32]).unwrap();
    victim.online().await;
    let alice = open(&dir, &addr, "alice", [6; 32]).unwrap();
    alice.online().await;
    let mut mallory = Peer {
        raw: Raw::connect(&addr, "mallory").await,
        user: "mallory".into(),
        sessions: Default::default(),
    };
    // Links for many more devices than the cap, made before the attack starts.
    let links: Vec<_> = (2..=cap + 40)
        .map(|device| {
            let key = IdentityKeyPair::generate(&mut rand::rng());
            let link = mallory.raw.link("mallory", device, &key);
            (device, key, link)
        })
        .collect();
    let bomb_addr = addr.clone();
    let bomb = tokio::spawn(async move {
        let (mut added, mut capped, mut kept) = (0, 0, Vec::new());
        for (device, key, link) in links {
            match Raw::connect_device(&bomb_addr, "mallory", device, key, Some(link)).await {
                Ok(raw) => {
                    added += 1;
                    kept.push(raw);
                }
                Err(refused) => {
                    let Out::Error(e) = &refused else {
                        panic!("{refused:?}")
                    };
                    assert_eq!(e.code, pr::ErrorCode::TooManyDevices as i32, "{e:?}");
                    capped += 1;
                }
            }
        }
        (added, capped, kept)
    });
    // Meanwhile Mallory writes to the victim (a prekey message: the victim lists her
    // devices), and Alice writes too.
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        mallory
            .send_content("victim", pc::content::Body::Text(format!("spam {i}")))
            .await;
        let started = Instant::now();
        let text = format!("alice {i}");
        alice.client.send_text("victim", &text).unwrap();
        loop {
            let m = victim.message().await;
            if m.body == Body::Text(text.clone()) {
                break;
            }
            assert_eq!(m.from.user, "mallory");
        }
        worst = worst.max(started.elapsed());
    }
    let (added, capped, _kept) = bomb.await.unwrap();
    assert_eq!(added, cap - 1, "devices 2..={cap} are added");
    assert_eq!(capped, 40, "every device past the cap is refused");
    assert!(worst < PAIR_BOUND, "Alice's messages took up to {worst:?}");
    // The victim answers Mallory (all her devices) and then Alice: Alice's message is not
    // held up behind the stranger's device list.
    let mut alice = alice;
    victim.client.send_text("mallory", "go away").unwrap();
    let started = Instant::now();
    victim.client.send_text("alice", "still here").unwrap();
    let m = alice.message().await;
    assert_eq!(m.body, Body::Text("still here".into()));
    assert!(started.elapsed() < PAIR_BOUND, "{:?}", started.elapsed());
}

/// Finding 10 with the real SDK: a relay withholds a removal from one member, who goes on
/// sending on the chain the removed member still holds. The others accept the message but
/// flag it (`Message::before_removal`, SPEC §13.3), and did not flag the same member's
/// message from before the removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_a_removal_was_withheld_from_is_flagged() {
    let dir = scratch("abuse-withheld-removal");
    let addr = relay(&dir).await;
    let mut alice = open(&dir, &addr, "alice", [7; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [8; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [9; 32]).unwrap();
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    let group = alice
        .client
        .create_group("withheld", &["bob", "carol"])
        .await
        .unwrap();
    for d in [&mut bob, &mut carol] {
        d.joined().await;
    }
    bob.client.send_group_text(&group, "before").unwrap();
    let m = alice.message().await;
    assert_eq!(m.body, Body::Text("before".into()));
    assert!(
        !m.before_removal,
        "a message from before any removal was flagged"
    );
    carol.message().await;
    // Bob goes offline; Alice removes Carol; the relay drops everything queued for Bob.
    bob.client.stop();
    while bob.client.is_connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.client.remove_from_group(&group, "carol").unwrap();
    carol
        .next(|e| {
            matches!(
                e,
                Event::Group {
                    change: GroupChange::RemovedSelf,
                    ..
                }
            )
            .then_some(())
        })
        .await;
    while alice.client.outbox_len().unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = rusqlite::Connection::open(dir.join("relay.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let withheld = db
        .execute("DELETE FROM mailbox WHERE user_id = 'bob'", [])
        .unwrap();
    assert!(withheld > 0, "the removal was not queued for Bob");
    // Bob, unaware, writes to the group as he knew it.
    bob.online().await;
    bob.client.send_group_text(&group, "after").unwrap();
    let m = alice.message().await;
    assert_eq!(m.body, Body::Text("after".into()));
    assert!(
        m.before_removal,
        "a message on a chain from before the removal was not flagged"
    );
    let shown = alice.client.messages().unwrap();
    assert!(
        shown
            .iter()
            .any(|m| m.body == Body::Text("after".into()) && m.before_removal),
        "the flag is not kept in the history"
    );
}

/// SPEC §16.9 through a real relay: Carol's mailbox holds Alice's full share, so Alice's
/// creation of a group is refused for Carol alone and waits in Alice's outbox, while Bob,
/// who got it, writes to the group at once. Bob's sender key and message reach Carol before
/// the group does: they are held, not dropped, and shown once Alice's creation arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_that_comes_before_its_group_waits_for_it() {
    let dir = scratch("early-group-message");
    let addr = relay_with(&dir, |c| c.mailbox_sender_max_count = 2).await;
    let alice = open(&dir, &addr, "alice", [1; 32]).unwrap();
    let mut bob = open(&dir, &addr, "bob", [2; 32]).unwrap();
    let mut carol = open(&dir, &addr, "carol", [3; 32]).unwrap();
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    carol.client.stop();
    while carol.client.is_connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alice's share of Carol's mailbox fills up.
    for t in ["one", "two"] {
        alice.client.send_text("carol", t).unwrap();
    }
    while alice.client.outbox_len().unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let group = alice
        .client
        .create_group("early", &["bob", "carol"])
        .await
        .unwrap();
    bob.joined().await;
    let early = bob.client.send_group_text(&group, "early").unwrap();
    bob.next(|e| match e {
        Event::Receipt {
            message_id,
            kind: hush_client::ReceiptKind::Sent,
            ..
        } if *message_id == early => Some(()),
        _ => None,
    })
    .await;
    assert!(
        alice.client.outbox_len().unwrap() > 0,
        "Alice's creation waits for room in Carol's mailbox"
    );
    // Carol comes back: Alice's texts, then Bob's sender key and message (held: no event,
    // no drop), then the group, and with it Bob's message.
    carol.client.start();
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s == "bob: early") {
        let e = tokio::time::timeout(WAIT, carol.events.recv())
            .await
            .expect("timed out")
            .expect("client gone");
        match e {
            Event::Message(m) => {
                let text = match &m.body {
                    Body::Text(t) => t.clone(),
                    Body::Attachment(_) => "<attachment>".into(),
                };
                seen.push(format!("{}: {text}", m.from.user));
                if m.from.user == "bob" {
                    assert_eq!(m.conversation, hush_client::Conversation::Group(group));
                }
            }
            Event::Group {
                change: GroupChange::Joined { .. },
                ..
            } => seen.push("joined".into()),
            Event::Dropped { from, reason } => {
                panic!("Carol dropped {from}'s envelope: {reason:?}")
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["alice: one", "alice: two", "joined", "bob: early"]);
}
