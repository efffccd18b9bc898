//! End to end through a real relay process (`hush relay`): clients killed mid-send, relay
//! restarts with mail queued, several devices per user, identity changes, groups,
//! attachments, presence, receipts, prekey refill, and `hush demo` itself. Loopback only;
//! every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use std::time::Duration;

use hush_client::{Body, Conversation, Event, GroupChange, ReceiptKind};

#[test]
fn hush_demo_passes() {
    let out = hush().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hush demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every step passed"));
    assert!(stdout.contains("The relay holds ciphertext only."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_and_relay_restarts_lose_and_duplicate_nothing() {
    let dir = scratch("kill");
    let (relay_proc, addr) = relay(&dir, "127.0.0.1:0", &[]);
    let alice_key = hex::encode([7u8; 32]);

    // Bob registers, then goes offline.
    let mut bob = open(&dir, &addr, "bob", 1, [9; 32], |_| {});
    bob.online().await;
    bob.client.stop();
    bob.expect("disconnect", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;

    let mut alice = chat(&dir, &addr, "alice", &alice_key);
    alice.say("/register");
    alice.wait_for("-- registered as alice.1");

    // The relay dies; Alice writes; her client is killed before it could send.
    relay_proc.kill();
    alice.wait_for("-- disconnected");
    alice.say("/to bob");
    alice.say("written while the relay was down");
    alice.wait_for("-- queued");
    alice.kill();

    // The relay restarts on the same port and database; Alice's client restarts and its
    // outbox goes out.
    let (relay_proc, _) = relay(&dir, &addr, &[]);
    let mut alice = chat(&dir, &addr, "alice", &alice_key);
    alice.wait_for("-- sent");
    // Killed again right after queueing, while connected: sent or not, it arrives once.
    alice.say("/to bob");
    alice.say("written just before a kill");
    alice.wait_for("-- queued");
    alice.kill();
    let alice = chat(&dir, &addr, "alice", &alice_key);
    alice.wait_for("-- connected");

    // With both messages queued for Bob, the relay is killed and restarted once more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay_proc.kill();
    let (_relay_proc, _) = relay(&dir, &addr, &[]);

    let mut bob = open(&dir, &addr, "bob", 1, [9; 32], |_| {});
    bob.online().await;
    let mut got: Vec<String> = Vec::new();
    while got.len() < 2 {
        got.push(text(&bob.message().await).to_string());
    }
    got.extend(
        bob.drain_messages(Duration::from_secs(2))
            .await
            .iter()
            .map(|m| text(m).to_string()),
    );
    got.sort();
    assert_eq!(
        got,
        [
            "written just before a kill",
            "written while the relay was down"
        ]
    );
    // Alice's chat sees the delivered ticks.
    alice.wait_for("-- delivered");
    bob.client.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_user_and_an_identity_change() {
    let dir = scratch("devices");
    let (_relay, addr) = relay(&dir, "127.0.0.1:0", &[]);
    let mut alice = open(&dir, &addr, "alice", 1, [1; 32], |_| {});
    let mut phone = open(&dir, &addr, "bob", 1, [2; 32], |_| {});
    phone.online().await;
    alice.online().await;
    // Bob's laptop joins with a link from his phone.
    let mut laptop = open(&dir, &addr, "bob", 2, [3; 32], |_| {});
    laptop
        .client
        .set_link(phone.client.link_device(2, laptop.client.identity_key()));
    laptop.online().await;

    // Alice's message reaches both of Bob's devices.
    alice.client.send_text("bob", "to all of Bob").unwrap();
    assert_eq!(text(&phone.message().await), "to all of Bob");
    assert_eq!(text(&laptop.message().await), "to all of Bob");
    // Bob answers from the laptop: Alice gets it, and the phone gets a synced copy.
    laptop.client.send_text("alice", "from the laptop").unwrap();
    let m = alice.message().await;
    assert_eq!(
        (text(&m), m.from.device, m.outgoing),
        ("from the laptop", 2, false)
    );
    let m = phone.message().await;
    assert_eq!(text(&m), "from the laptop");
    assert!(m.outgoing, "a copy of Bob's own message");
    assert_eq!(m.conversation, Conversation::Direct("alice".into()));

    // The laptop is reinstalled: new store, new identity key, relinked by the phone.
    laptop.client.stop();
    std::fs::create_dir_all(dir.join("new")).unwrap();
    let mut reinstalled = open(&dir.join("new"), &addr, "bob", 2, [4; 32], |_| {});
    reinstalled.client.set_link(
        phone
            .client
            .link_device(2, reinstalled.client.identity_key()),
    );
    reinstalled.online().await;
    alice
        .client
        .send_text("bob", "after the reinstall")
        .unwrap();
    let (address, number) = alice
        .expect("identity change", |e| match e {
            Event::IdentityChanged {
                address,
                safety_number,
            } => Some((address.clone(), safety_number.digits().to_string())),
            _ => None,
        })
        .await;
    assert_eq!(address.to_string(), "bob.2");
    assert_eq!(number.len(), 60);
    let expected = alice.client.safety_numbers("bob").await.unwrap();
    assert!(
        expected
            .iter()
            .any(|d| d.address.device == 2 && d.safety_number.digits() == number)
    );
    assert_eq!(text(&reinstalled.message().await), "after the reinstall");
    assert_eq!(text(&phone.message().await), "after the reinstall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_attachments_presence_receipts_and_prekey_refill() {
    let dir = scratch("features");
    let (_relay, addr) = relay(&dir, "127.0.0.1:0", &[]);
    // Carol keeps few prekeys, so first contacts run her stock low and she refills.
    let mut alice = open(&dir, &addr, "alice", 1, [1; 32], |_| {});
    let mut bob = open(&dir, &addr, "bob", 1, [2; 32], |_| {});
    let mut carol = open(&dir, &addr, "carol", 1, [3; 32], |c| c.prekey_batch = 21);
    let mut dave = open(&dir, &addr, "dave", 1, [4; 32], |_| {});
    for d in [&alice, &bob, &carol, &dave] {
        d.online().await;
    }
    carol
        .expect("initial upload", |e| {
            matches!(e, Event::PrekeysUploaded { count: 21 }).then_some(())
        })
        .await;

    // Receipts: sent, delivered, read.
    let id = alice.client.send_text("bob", "tick tick tick").unwrap();
    let m = bob.message().await;
    bob.client.mark_read(&m.from, &[m.id]).unwrap();
    let mut ticks = Vec::new();
    while ticks.len() < 3 {
        ticks.push(
            alice
                .expect("a tick", |e| match e {
                    Event::Receipt {
                        message_id, kind, ..
                    } if *message_id == id => Some(*kind),
                    _ => None,
                })
                .await,
        );
    }
    assert_eq!(
        ticks,
        [ReceiptKind::Sent, ReceiptKind::Delivered, ReceiptKind::Read]
    );
    assert_eq!(alice.client.receipts(&id).unwrap().len(), 3);

    // Presence: hidden from a user Dave never wrote to; online once he has; last seen when
    // gone.
    let p = alice.client.presence("dave").await.unwrap();
    assert!(!p.online && p.last_seen_ms.is_none());
    dave.client.send_text("alice", "hi from dave").unwrap();
    assert_eq!(text(&alice.message().await), "hi from dave");
    assert!(alice.client.presence("dave").await.unwrap().online);
    // Watching: the driver's poll reports it as an event (`core::presence` decides).
    alice.client.watch_presence("dave");
    let p = alice
        .expect("dave's presence", |e| match e {
            Event::Presence(p) if p.user == "dave" => Some(p.clone()),
            _ => None,
        })
        .await;
    assert!(p.online);

    // A group: create with Bob and Carol, add Dave, remove Bob, Carol leaves.
    let g = alice
        .client
        .create_group("team", &["bob", "carol"])
        .await
        .unwrap();
    for d in [&mut bob, &mut carol] {
        d.expect("join", |e| {
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
    }
    alice.client.send_group_text(&g, "one").unwrap();
    assert_eq!(text(&bob.message().await), "one");
    assert_eq!(text(&carol.message().await), "one");
    carol.client.send_group_text(&g, "two").unwrap();
    assert_eq!(text(&alice.message().await), "two");
    assert_eq!(text(&bob.message().await), "two");
    alice.client.add_to_group(&g, "dave").await.unwrap();
    dave.expect("join", |e| {
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
    // Carol's sender key reaches Dave when he is added: he can read her next message.
    carol
        .expect("Dave added", |e| {
            matches!(e, Event::Group { change: GroupChange::Added(a), .. } if a.user == "dave")
                .then_some(())
        })
        .await;
    alice.client.send_group_text(&g, "three").unwrap();
    assert_eq!(text(&dave.message().await), "three");
    assert_eq!(text(&carol.message().await), "three");
    assert_eq!(text(&bob.message().await), "three");
    carol.client.send_group_text(&g, "four").unwrap();
    assert_eq!(text(&dave.message().await), "four");
    assert_eq!(text(&bob.message().await), "four");
    alice.client.remove_from_group(&g, "bob").unwrap();
    bob.expect("removal", |e| {
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
    assert!(
        bob.client.send_group_text(&g, "still here?").is_ok(),
        "queued, but cannot be encrypted"
    );
    bob.expect("failure", |e| {
        matches!(e, Event::SendFailed { .. }).then_some(())
    })
    .await;
    alice.client.send_group_text(&g, "five").unwrap();
    for d in [&mut carol, &mut dave] {
        assert_eq!(text(&d.message().await), "five");
    }
    carol.client.leave_group(&g).unwrap();
    alice
        .expect("Carol left", |e| {
            matches!(e, Event::Group { change: GroupChange::Left(a), .. } if a.user == "carol")
                .then_some(())
        })
        .await;
    alice.client.send_group_text(&g, "six").unwrap();
    assert_eq!(text(&dave.message().await), "six");
    assert!(
        bob.drain_messages(Duration::from_millis(500))
            .await
            .is_empty(),
        "removed members get nothing"
    );

    // An attachment over several chunks.
    let file = dir.join("photo.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let mut ups = Vec::new();
    alice
        .client
        .send_file(
            Conversation::Direct("dave".into()),
            &file,
            "image/png",
            |p| ups.push(p),
        )
        .await
        .unwrap();
    assert_eq!(ups.last().map(|p| p.done == p.total), Some(true));
    let m = dave.message().await;
    let Body::Attachment(a) = &m.body else {
        panic!("expected an attachment")
    };
    assert_eq!(
        (a.size, a.media_type.as_str(), a.file_name.as_str()),
        (300_000, "image/png", "photo.bin")
    );
    let out = dir.join("saved.bin");
    let mut downs = 0;
    dave.client.download(a, &out, |_| downs += 1).await.unwrap();
    assert!(downs > 1);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // A pointer with a wrong digest is refused and writes nothing.
    let mut bad = a.clone();
    bad.digest[0] ^= 1;
    let out2 = dir.join("bad.bin");
    assert!(dave.client.download(&bad, &out2, |_| {}).await.is_err());
    assert!(!out2.exists());

    // First contacts from many users run Carol's stock below the relay's mark of 20: she
    // is told and refills.
    for i in 0..3 {
        let mut u = open(
            &dir,
            &addr,
            &format!("user{i}"),
            1,
            [10 + i as u8; 32],
            |_| {},
        );
        u.online().await;
        u.client.send_text("carol", "hello Carol").unwrap();
        u.expect("sent", |e| {
            matches!(
                e,
                Event::Receipt {
                    kind: ReceiptKind::Sent,
                    ..
                }
            )
            .then_some(())
        })
        .await;
        u.client.stop();
    }
    carol
        .expect("refill", |e| {
            matches!(e, Event::PrekeysUploaded { count: 21 }).then_some(())
        })
        .await;

    // Presence after Dave leaves: offline with a last-seen time (the relay's window is 60 s,
    // so only the last-seen time is checked here).
    dave.client.stop();
    let p = alice.client.presence("dave").await.unwrap();
    assert!(p.last_seen_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_trace_level_hold_no_plaintext_and_no_keys() {
    let dir = scratch("logs");
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = hush();
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("relay.db"))
        .arg("--blob-dir")
        .arg(dir.join("blobs"))
        .env("RUST_LOG", "trace");
    let relay_proc = Proc::spawn_with_stderr(cmd, log("relay"));
    let addr = relay_proc
        .wait_for("listening on")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let keys = [hex::encode([0x5au8; 32]), hex::encode([0xa5u8; 32])];
    let chat_logged = |user: &str, key: &str| {
        let mut cmd = hush();
        cmd.args([
            "chat",
            "--relay",
            &format!("ws://{addr}"),
            "--user",
            user,
            "--data",
        ])
        .arg(dir.join(user))
        .env("HUSH_STORAGE_KEY", key)
        .env("RUST_LOG", "trace");
        Proc::spawn_with_stderr(cmd, log(user))
    };
    let mut bob = chat_logged("bob", &keys[1]);
    bob.say("/register");
    bob.wait_for("-- registered");
    let mut alice = chat_logged("alice", &keys[0]);
    alice.say("/register");
    alice.wait_for("-- registered");
    let secret = "TRACE-ME-IF-YOU-CAN plaintext 7f3a";
    let file_text = "ATTACHMENT-PLAINTEXT-9d21 ".repeat(100);
    std::fs::write(dir.join("note.txt"), &file_text).unwrap();
    alice.say("/to bob");
    alice.say(secret);
    bob.wait_for(secret);
    alice.say(&format!("/file {}", dir.join("note.txt").display()));
    bob.wait_for("/save 1");
    bob.say(&format!("/save 1 {}", dir.join("saved.txt").display()));
    bob.wait_for("-- saved");
    alice.wait_for("-- read");
    alice.say("/quit");
    bob.say("/quit");
    std::thread::sleep(Duration::from_millis(500));
    drop((alice, bob, relay_proc));
    assert_eq!(
        std::fs::read_to_string(dir.join("saved.txt")).unwrap(),
        file_text
    );

    let mut total = 0;
    for name in ["relay", "alice", "bob"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
        total += text.len();
        for needle in [secret, "ATTACHMENT-PLAINTEXT", &keys[0], &keys[1]] {
            assert!(!text.contains(needle), "{name}'s log contains {needle:?}");
        }
    }
    // The logs are not empty: the check above looked at something.
    assert!(total > 1000, "trace logging produced only {total} bytes");
}

/// `hush chat` shows a forwarded message as such and forwards the last message shown with
/// `/forward`, the count going up by one each time (SPEC §16.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hush_chat_shows_and_forwards_messages() {
    let dir = scratch("chat-forward");
    let (_relay, addr) = relay(&dir, "127.0.0.1:0", &[]);
    let mut bob = open(&dir, &addr, "bob", 1, [2; 32], |_| {});
    let mut carol = open(&dir, &addr, "carol", 1, [3; 32], |_| {});
    bob.online().await;
    carol.online().await;
    let alice_key = hex::encode([7u8; 32]);
    let mut alice = chat(&dir, &addr, "alice", &alice_key);
    alice.say("/register");
    alice.wait_for("-- registered as alice.1");
    // Bob writes to Carol, who forwards it to Alice.
    bob.client.send_text("carol", "worth reading").unwrap();
    let original = carol.message().await;
    carol
        .client
        .forward(&original, &[Conversation::Direct("alice".into())])
        .unwrap();
    alice.wait_for("<< carol.1 [you, forwarded]: worth reading");
    // Alice passes it on to Bob from the chat.
    alice.say("/forward bob");
    alice.wait_for("-- forwarded to 1 chat(s)");
    let copy = bob.message().await;
    assert_eq!(text(&copy), "worth reading");
    assert_eq!(copy.forwarded, 2);
    // Alice's session with Bob (her first contact) is post-quantum, and /verify says so.
    alice.wait_for("-- new session with bob.1 (post-quantum)");
    alice.say("/verify bob");
    alice.wait_for("(post-quantum: yes)");
    bob.client.stop();
    carol.client.stop();
}
