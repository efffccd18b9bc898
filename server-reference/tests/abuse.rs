//! Abusive clients (issue 15) against the relay, on both backends: each attack runs beside a
//! well-behaved pair, which must lose nothing and keep its delivery time within a stated
//! bound; each new limit is tested at its boundary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Instant;

use common::*;
use hush_relay::Store;
use hush_relay::store::{Addr, MailboxLimits, ReceiptLimits};

/// The bound the well-behaved pair's next message must arrive within while an attack runs.
const PAIR_BOUND: Duration = Duration::from_secs(2);

/// Sends one message from `from` to `to` (device 1) and waits for it: the time it took.
async fn pair_round(from: &mut Client, to: &mut Client, to_user: &str, i: u32) -> Duration {
    let started = Instant::now();
    let mid = i.to_be_bytes();
    assert!(matches!(
        from.call(send_to(&[(to_user, 1)], &mid, b"hello")).await,
        Out::Sent(_)
    ));
    let e = to.envelope().await;
    assert_eq!(e.message_id, mid, "the pair lost or reordered a message");
    assert!(matches!(
        to.call(In::Ack(proto::Ack {
            envelope_ids: vec![e.envelope_id]
        }))
        .await,
        Out::Done(_)
    ));
    started.elapsed()
}

/// Finding 1: the relay takes no read receipts any more (they travel end to end, SPEC
/// §16.6), so a stranger cannot make it queue receipts for anyone; the only receipts it
/// makes are "delivered" receipts for envelopes it delivered, and a flood of
/// acknowledgements for others' envelopes makes none. The pair is not delayed.
async fn no_receipts_can_be_forged_at_the_relay(b: Backend) {
    let relay = start(b.db("forged-receipts").await, |_| {}).await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let (mut mallory, _) = registered(&relay, "mallory").await;
    // The old request (ClientFrame field 7) is refused as malformed.
    let mut old_read = proto::ClientFrame {
        request_id: 9,
        body: None,
    }
    .encode_to_vec();
    old_read.extend_from_slice(&[0x3a, 0x04, 0x12, 0x02, 0x01, 0x02]);
    mallory.send_bytes(old_read).await;
    let refused = mallory
        .expect_push(|b| matches!(b, Out::Error(_)).then(|| code(b)))
        .await;
    assert_eq!(refused, ErrorCode::Malformed);
    // At full speed: acknowledgements of envelope ids that are not Mallory's.
    let flood = tokio::spawn(async move {
        for round in 0..40u64 {
            let ids = (round * 1024..(round + 1) * 1024).collect();
            match mallory
                .call(In::Ack(proto::Ack { envelope_ids: ids }))
                .await
            {
                Out::Done(_) => {}
                out if code(&out) == ErrorCode::RateLimited => {}
                other => panic!("{other:?}"),
            }
        }
    });
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        worst = worst.max(pair_round(&mut alice, &mut bob, "bob", i).await);
    }
    flood.await.unwrap();
    assert!(worst < PAIR_BOUND, "the pair took {worst:?}");
    // Alice hears of exactly her 20 envelopes, each delivered once, and of nothing else.
    let mut delivered = std::collections::BTreeSet::new();
    alice.call(In::Ping(proto::Ping {})).await;
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(300), alice.recv()).await {
        if let Some(Out::Receipt(r)) = f.body {
            assert_eq!(r.kind, proto::ReceiptKind::Delivered as i32);
            assert_eq!(r.recipient.unwrap().user_id, "bob");
            assert!(delivered.insert(r.message_id), "a receipt came twice");
        }
    }
    assert_eq!(delivered.len(), 20);
    bob.call(In::Ping(proto::Ping {})).await;
    assert!(
        bob.queue
            .iter()
            .all(|f| !matches!(f.body, Some(Out::Receipt(_)))),
        "Bob got a receipt for something he never sent"
    );
    relay.stop().await;
}

/// Finding 5: id lists are capped per frame and charged to the device's rate limit.
async fn ack_lists_are_capped_and_charged(b: Backend) {
    let relay = start(b.db("ack-caps").await, |c| {
        c.device_rate = hush_relay::RateLimit::per_second(10);
    })
    .await;
    let (mut m, _) = registered(&relay, "mallory").await;
    let ids = |n: u64| (1..=n).collect::<Vec<_>>();
    let max = hush_relay_protocol::limits::MAX_ACK_IDS as u64;
    assert_eq!(
        code(
            &m.call(In::Ack(proto::Ack {
                envelope_ids: ids(max + 1)
            }))
            .await
        ),
        ErrorCode::TooLarge
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // the bucket refills (20 tokens)
    // 1,024 ids cost 16 tokens beside the frame's own: one such frame fits in the bucket
    // of 20, a second at once does not.
    assert!(matches!(
        m.call(In::Ack(proto::Ack {
            envelope_ids: ids(max)
        }))
        .await,
        Out::Done(_)
    ));
    assert_eq!(
        code(
            &m.call(In::AckReceipts(proto::AckReceipts {
                receipt_ids: ids(max)
            }))
            .await
        ),
        ErrorCode::RateLimited
    );
    relay.stop().await;
}

/// Finding 2 (device bomb) and 6 (stale links): a cap on devices per user, removal by the
/// owner, and a removed key that cannot come back with its old link.
async fn device_cap_removal_and_revoked_links(b: Backend) {
    let relay = start(b.db("devices").await, |c| c.max_devices_per_user = 3).await;
    let (mut phone, phone_id) = registered(&relay, "alice").await;
    let mut ids = vec![];
    let mut conns = vec![];
    for device in 2..=4u32 {
        let key = IdentityKeyPair::generate(&mut rand::rng());
        let mut c = connect(&relay).await;
        let answer = c
            .auth(
                &key,
                "alice",
                device,
                Some(link_for(&phone_id, 1, "alice", device, &key)),
            )
            .await;
        if device <= 3 {
            assert!(matches!(answer, Out::Authenticated(_)), "device {device}");
        } else {
            // The boundary: the fourth device of a user capped at three.
            assert_eq!(code(&answer), ErrorCode::TooManyDevices);
        }
        ids.push(key);
        conns.push(c);
    }
    let listed = |out: Out| match out {
        Out::Devices(d) => d.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let list = In::ListDevices(proto::ListDevices {
        user_id: "alice".into(),
    });
    assert_eq!(listed(phone.call(list.clone()).await), [1, 2, 3]);
    // Mail waiting for device 3 goes with it.
    let (mut bob, _) = registered(&relay, "bob").await;
    assert!(matches!(
        bob.call(send_to(&[("alice", 3)], b"m", b"x")).await,
        Out::Sent(_)
    ));
    let remove = |device| In::RemoveDevice(proto::RemoveDevice { device_id: device });
    assert_eq!(code(&phone.call(remove(1)).await), ErrorCode::Forbidden);
    assert_eq!(code(&phone.call(remove(9)).await), ErrorCode::NotFound);
    assert!(matches!(phone.call(remove(3)).await, Out::Done(_)));
    // The removed device's connection is closed with a fatal error that says why.
    let closed = conns[1]
        .expect_push(|b| match b {
            Out::Error(e) if e.fatal => Some(e.message.clone()),
            _ => None,
        })
        .await;
    assert_eq!(closed, "device removed");
    assert_eq!(listed(phone.call(list.clone()).await), [1, 2]);
    // Its old key with its old link cannot take the slot back...
    let mut stolen = connect(&relay).await;
    assert_eq!(
        code(
            &stolen
                .auth(
                    &ids[1],
                    "alice",
                    3,
                    Some(link_for(&phone_id, 1, "alice", 3, &ids[1]))
                )
                .await
        ),
        ErrorCode::Forbidden
    );
    // ...nor any other slot, nor replace another device's key.
    let mut stolen = connect(&relay).await;
    assert_eq!(
        code(
            &stolen
                .auth(
                    &ids[1],
                    "alice",
                    2,
                    Some(link_for(&phone_id, 1, "alice", 2, &ids[1]))
                )
                .await
        ),
        ErrorCode::Forbidden
    );
    // A new installation, vouched for anew, takes the slot; the old mail is gone.
    let fresh = IdentityKeyPair::generate(&mut rand::rng());
    let mut c = connect(&relay).await;
    assert!(matches!(
        c.auth(
            &fresh,
            "alice",
            3,
            Some(link_for(&phone_id, 1, "alice", 3, &fresh))
        )
        .await,
        Out::Authenticated(_)
    ));
    c.call(In::Ping(proto::Ping {})).await;
    assert!(
        c.queue
            .iter()
            .all(|f| !matches!(f.body, Some(Out::Envelope(_)))),
        "the removed device's mail was delivered to its successor"
    );
    // The stolen key tries its old link again and again, at full speed, while a pair
    // talks: every attempt is refused, and the pair is not delayed.
    let retries = async {
        let mut refused = 0;
        for _ in 0..50 {
            let mut stolen = connect(&relay).await;
            let answer = stolen
                .auth(
                    &ids[1],
                    "alice",
                    3,
                    Some(link_for(&phone_id, 1, "alice", 3, &ids[1])),
                )
                .await;
            refused += usize::from(code(&answer) == ErrorCode::Forbidden);
        }
        refused
    };
    let pair = async {
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            worst = worst.max(pair_round(&mut bob, &mut phone, "alice", i).await);
        }
        worst
    };
    let (refused, worst) = tokio::join!(retries, pair);
    assert_eq!(refused, 50);
    assert!(worst < PAIR_BOUND, "the pair took {worst:?}");
    relay.stop().await;
}

/// Finding 8 at full speed: a stranger asks for a user's presence as fast as the relay
/// answers, beside a pair of which that user is one; every answer it gets says "hidden"
/// (or refuses it for its rate), the friend who was written to sees the user, and the pair
/// is not delayed.
async fn presence_floods_learn_nothing(b: Backend) {
    let relay = start(b.db("presence-flood").await, |_| {}).await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let (mut mallory, _) = registered(&relay, "mallory").await;
    let ask = In::Presence(proto::PresenceQuery {
        user_id: "bob".into(),
    });
    let flood = async {
        let (mut hidden, mut limited) = (0, 0);
        for _ in 0..2_000 {
            match mallory.call(ask.clone()).await {
                Out::Presence(p) => {
                    assert!(!p.online && p.last_seen_ms == 0 && p.hidden, "{p:?}");
                    hidden += 1;
                }
                out => {
                    assert_eq!(code(&out), ErrorCode::RateLimited);
                    limited += 1;
                }
            }
        }
        (hidden, limited)
    };
    let pair = async {
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            worst = worst.max(pair_round(&mut bob, &mut alice, "alice", i).await);
        }
        worst
    };
    let ((hidden, limited), worst) = tokio::join!(flood, pair);
    assert_eq!(hidden + limited, 2_000);
    assert!(worst < PAIR_BOUND, "the pair took {worst:?}");
    // Bob wrote to Alice: she sees him.
    let Out::Presence(p) = alice.call(ask).await else {
        panic!("no presence")
    };
    assert!(p.online && !p.hidden, "{p:?}");
    relay.stop().await;
}

/// Finding 3 and 14: a stranger drains one-time prekeys only at the target's hand-out rate
/// (bundles keep coming, without one), fetches bundles only at its own rate, and the relay
/// keeps at most `max_one_time_prekeys` per device.
async fn prekey_drain_is_bounded(b: Backend) {
    let relay = start(b.db("prekey-drain").await, |c| {
        c.prekey_handout_rate = hush_relay::RateLimit {
            per_second: 0.001,
            burst: 5.0,
        };
        c.bundle_rate = hush_relay::RateLimit {
            per_second: 0.001,
            burst: 20.0,
        };
        c.max_one_time_prekeys = 12;
    })
    .await;
    let (mut victim, victim_id) = registered(&relay, "victim").await;
    assert!(matches!(
        victim.call(upload(&victim_id, 1, 10)).await,
        Out::PrekeyStatus(proto::PrekeyStatus {
            one_time_prekeys: 10,
            ..
        })
    ));
    let (mut mallory, _) = registered(&relay, "mallory").await;
    let fetch = In::FetchBundle(proto::FetchBundle {
        address: Some(addr("victim", 1)),
    });
    let mut with_key = 0;
    for i in 0..20 {
        match mallory.call(fetch.clone()).await {
            Out::Bundle(bundle) => with_key += usize::from(bundle.one_time_prekey.is_some()),
            other => panic!("fetch {i}: {other:?}"),
        }
    }
    assert_eq!(
        with_key, 5,
        "one-time prekeys handed out beyond the target's rate"
    );
    // The 21st fetch is over Mallory's own bundle rate.
    assert_eq!(
        code(&mallory.call(fetch.clone()).await),
        ErrorCode::RateLimited
    );
    // A well-behaved sender still gets the victim's bundle (without a one-time prekey) and
    // reaches the victim at once.
    let (mut alice, _) = registered(&relay, "alice").await;
    let started = Instant::now();
    assert!(matches!(alice.call(fetch.clone()).await, Out::Bundle(_)));
    assert!(matches!(
        alice.call(send_to(&[("victim", 1)], b"hi", b"x")).await,
        Out::Sent(_)
    ));
    victim.envelope().await;
    assert!(started.elapsed() < PAIR_BOUND);
    // Five of ten are left; the stock cap is 12: seven more fit, then nothing.
    let status = victim.call(upload(&victim_id, 2, 7)).await;
    assert!(
        matches!(
            status,
            Out::PrekeyStatus(proto::PrekeyStatus {
                one_time_prekeys: 12,
                ..
            })
        ),
        "{status:?}"
    );
    assert_eq!(
        code(&victim.call(upload(&victim_id, 3, 1)).await),
        ErrorCode::TooLarge
    );
    relay.stop().await;
}

/// Finding 4: one sending user fills at most its share of a device's mailbox (count and
/// bytes, each at its boundary); others still reach the device, and a flood at full speed
/// does not delay a well-behaved pair.
async fn mailbox_flooding_takes_only_a_share(b: Backend) {
    let relay = start(b.db("mailbox-share").await, |c| {
        c.mailbox_max_count = 50;
        c.mailbox_sender_max_count = 5;
        c.mailbox_sender_max_bytes = 200;
    })
    .await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (bob_conn, bob_id) = registered(&relay, "bob").await;
    drop(bob_conn);
    let (mut mallory, _) = registered(&relay, "mallory").await;
    for i in 0..5u8 {
        assert!(matches!(
            mallory.call(send_to(&[("bob", 1)], &[i], &[i; 10])).await,
            Out::Sent(_)
        ));
    }
    let refused = mallory.call(send_to(&[("bob", 1)], &[9], &[9; 10])).await;
    assert_eq!(code(&refused), ErrorCode::MailboxFull);
    // Alice's share is her own: 200 bytes, at the boundary.
    assert!(matches!(
        alice.call(send_to(&[("bob", 1)], b"a1", &[1; 200])).await,
        Out::Sent(_)
    ));
    assert_eq!(
        code(&alice.call(send_to(&[("bob", 1)], b"a2", &[1; 1])).await),
        ErrorCode::MailboxFull
    );
    // Bob reads and acknowledges: the shares free up.
    let mut bob = connect(&relay).await;
    bob.auth(&bob_id, "bob", 1, None).await;
    let mut ids = vec![];
    for _ in 0..6 {
        ids.push(bob.envelope().await.envelope_id);
    }
    assert!(matches!(
        bob.call(In::Ack(proto::Ack { envelope_ids: ids })).await,
        Out::Done(_)
    ));
    // Now Mallory floods at full speed (refusals included) while Alice and Bob talk.
    let flood = tokio::spawn(async move {
        let (mut sent, mut full) = (0, 0);
        for i in 0..300u32 {
            match mallory
                .call(send_to(&[("bob", 1)], &i.to_be_bytes(), b"spam"))
                .await
            {
                Out::Sent(_) => sent += 1,
                out if code(&out) == ErrorCode::MailboxFull => full += 1,
                out if code(&out) == ErrorCode::RateLimited => {}
                other => panic!("{other:?}"),
            }
        }
        (sent, full)
    });
    let mut worst = Duration::ZERO;
    for i in 0..10u32 {
        let started = Instant::now();
        let mid = (1000 + i).to_be_bytes();
        assert!(matches!(
            alice.call(send_to(&[("bob", 1)], &mid, b"hello")).await,
            Out::Sent(_)
        ));
        // Bob sees Alice's message (Mallory's spam comes too, and stays unacknowledged).
        loop {
            let e = bob.envelope().await;
            if e.message_id == mid {
                bob.call(In::Ack(proto::Ack {
                    envelope_ids: vec![e.envelope_id],
                }))
                .await;
                break;
            }
        }
        worst = worst.max(started.elapsed());
    }
    let (sent, full) = flood.await.unwrap();
    assert_eq!(sent, 5, "the flood got past its share");
    assert!(full > 0);
    assert!(worst < PAIR_BOUND, "the pair took {worst:?}");
    relay.stop().await;
}

/// A TCP socket to the relay from another loopback address (the attacker's).
async fn socket_from(ip: [u8; 4], relay: &TestRelay) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
    s.connect(relay.addr).await.unwrap()
}

/// Whether the relay closes `s` within `within` (reads end or fail).
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error page (a timed-out header gets 408): keep reading to the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// Finding 7 (slow loris): sockets that never finish their request are closed after the
/// header-read timeout, at most `max_pending_per_ip` of them per address are held at all,
/// and the pair (and a new device on another address) is served meanwhile.
async fn slow_clients_are_cut_off_and_capped(b: Backend) {
    let relay = start(b.db("slowloris").await, |c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.max_pending_per_ip = 20;
    })
    .await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let attacker = [127, 0, 0, 2];
    let mut held = Vec::new();
    for i in 0..30 {
        let mut s = socket_from(attacker, &relay).await;
        if i % 2 == 0 {
            use tokio::io::AsyncWriteExt;
            // Half a request, never finished.
            s.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: relay\r\nUpgrade: web")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // The ten beyond the cap are closed at once (well within the 1 s header timeout).
    let refused = futures_util::future::join_all(
        held.iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(300))),
    )
    .await;
    assert_eq!(
        refused.iter().filter(|c| **c).count(),
        10,
        "sockets past max_pending_per_ip"
    );
    // The pair talks, and a new device from another address connects, meanwhile.
    for i in 0..5 {
        assert!(pair_round(&mut alice, &mut bob, "bob", i).await < PAIR_BOUND);
    }
    let (_carol, _) = registered(&relay, "carol").await;
    // The twenty held are all cut off by the header-read timeout.
    let cut = futures_util::future::join_all(
        held.iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(3))),
    )
    .await;
    assert!(
        cut.iter().all(|c| *c),
        "a slow socket outlived the header timeout: {cut:?}"
    );
    // And the address may open sockets again.
    let mut again = socket_from(attacker, &relay).await;
    assert!(!closed_within(&mut again, Duration::from_millis(200)).await);
    relay.stop().await;
}

/// Finding 9: upload tokens come at the device's token rate, and each device uploads at
/// most its daily quota of blob bytes (each at its boundary); another device is unaffected,
/// and a pair is not delayed while the refused device keeps trying at full speed.
async fn blob_tokens_and_bytes_are_rationed(b: Backend) {
    let relay = start(b.db("blob-quota").await, |c| {
        c.max_blob_bytes = 600;
        c.blob_bytes_per_day = 1000;
        c.upload_token_rate = hush_relay::RateLimit {
            per_second: 0.001,
            burst: 4.0,
        };
    })
    .await;
    let (mut m, _) = registered(&relay, "mallory").await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let Out::UploadToken(t) = m.call(In::UploadToken(proto::UploadTokenRequest {})).await
        else {
            panic!("a token within the rate was refused")
        };
        tokens.push(t.token);
    }
    assert_eq!(
        code(&m.call(In::UploadToken(proto::UploadTokenRequest {})).await),
        ErrorCode::RateLimited
    );
    // 600 + 400 = the quota of 1,000 exactly; one byte more is refused.
    assert_eq!(http(&relay, post(Some(&tokens[0]), &[1; 600])).await.0, 201);
    assert_eq!(http(&relay, post(Some(&tokens[1]), &[2; 400])).await.0, 201);
    assert_eq!(http(&relay, post(Some(&tokens[2]), &[3; 1])).await.0, 429);
    // Someone else's quota is their own.
    let (mut alice, _) = registered(&relay, "alice").await;
    let Out::UploadToken(t) = alice
        .call(In::UploadToken(proto::UploadTokenRequest {}))
        .await
    else {
        panic!()
    };
    assert_eq!(http(&relay, post(Some(&t.token), &[4; 600])).await.0, 201);
    // At full speed, Mallory asks for tokens and uploads past her quota while a pair talks:
    // each is refused at once, and the pair is not delayed.
    let (mut bob, _) = registered(&relay, "bob").await;
    let flood = async {
        let (mut tokens_refused, mut statuses) = (0, Vec::new());
        for _ in 0..100 {
            let out = m.call(In::UploadToken(proto::UploadTokenRequest {})).await;
            tokens_refused += usize::from(code(&out) == ErrorCode::RateLimited);
            statuses.push(http(&relay, post(Some(&tokens[3]), &[5; 600])).await.0);
        }
        (tokens_refused, statuses)
    };
    let pair = async {
        let mut worst = Duration::ZERO;
        for i in 0..20 {
            worst = worst.max(pair_round(&mut alice, &mut bob, "bob", i).await);
        }
        worst
    };
    let ((tokens_refused, statuses), worst) = tokio::join!(flood, pair);
    assert_eq!(tokens_refused, 100, "a token got past the rate");
    // Over the quota (429); the refused upload spent its one-use token (401 from then on).
    assert_eq!(statuses[0], 429);
    assert!(statuses[1..].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(worst < PAIR_BOUND, "the pair took {worst:?}");
    // Nothing of the refused uploads is left behind in the blob directory.
    let leftovers = std::fs::read_dir(relay.db.path.with_file_name("blobs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("upload-")
        })
        .count();
    assert_eq!(leftovers, 0);
    relay.stop().await;
}

/// A registration check of the operator's: allows the code "123456", counts its calls.
async fn hook_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Read the head and the JSON body (it ends with "}").
            while !got.ends_with(b"}") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&got);
            let code = hex::encode(b"123456");
            let answer = if text.contains(&format!("\"token\":\"{code}\"")) {
                "HTTP/1.1 204 No Content\r\n\r\n"
            } else {
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (addr, calls)
}

/// The operator's own registration check (a phone or e-mail code, say): asked before a
/// new user id is claimed, never for a user's other devices; it fails closed.
async fn registration_goes_through_the_operators_check(b: Backend) {
    let (hook, calls) = hook_server().await;
    let relay = start(b.db("registration-hook").await, |c| {
        c.registration_hook =
            Some(hush_relay::hook::HookUrl::parse(&format!("http://{hook}/check")).unwrap());
    })
    .await;
    let calls = || calls.load(std::sync::atomic::Ordering::SeqCst);
    let mallory = IdentityKeyPair::generate(&mut rand::rng());
    let mut c = connect(&relay).await;
    let out = c
        .auth_with_token(&mallory, "mallory", 1, None, b"000000".to_vec())
        .await;
    assert_eq!(code(&out), ErrorCode::Forbidden);
    assert_eq!(calls(), 1);
    let alice = IdentityKeyPair::generate(&mut rand::rng());
    let mut c = connect(&relay).await;
    assert!(matches!(
        c.auth_with_token(&alice, "alice", 1, None, b"123456".to_vec())
            .await,
        Out::Authenticated(_)
    ));
    assert_eq!(calls(), 2);
    // Alice's other device (vouched for by a link) and her next logins: no check.
    let phone2 = IdentityKeyPair::generate(&mut rand::rng());
    let mut c2 = connect(&relay).await;
    assert!(matches!(
        c2.auth(
            &phone2,
            "alice",
            2,
            Some(link_for(&alice, 1, "alice", 2, &phone2))
        )
        .await,
        Out::Authenticated(_)
    ));
    let mut again = connect(&relay).await;
    assert!(matches!(
        again.auth(&alice, "alice", 1, None).await,
        Out::Authenticated(_)
    ));
    assert_eq!(calls(), 2);
    relay.stop().await;
    // A check that does not answer refuses (and says when to retry).
    let relay = start(b.db("registration-hook-down").await, |c| {
        // A port nobody listens on.
        c.registration_hook =
            Some(hush_relay::hook::HookUrl::parse("http://127.0.0.1:9/").unwrap());
    })
    .await;
    let mut c = connect(&relay).await;
    let out = c
        .auth_with_token(&alice, "alice", 1, None, b"123456".to_vec())
        .await;
    assert_eq!(code(&out), ErrorCode::Internal);
    relay.stop().await;
}

async fn store_of(b: Backend, name: &str) -> Stores {
    let db = b.db(name).await;
    match b {
        Backend::Sqlite => Stores::Sqlite(hush_relay::SqliteStore::open(&db.path).unwrap()),
        Backend::Postgres => Stores::Postgres(
            hush_relay::PgStore::connect(PG_URL, Some(&db.schema), 4)
                .await
                .unwrap(),
        ),
    }
}

enum Stores {
    Sqlite(hush_relay::SqliteStore),
    Postgres(hush_relay::PgStore),
}

fn a(user: &str) -> Addr {
    Addr {
        user: user.into(),
        device: 1,
    }
}

/// The receipt rules at the store, each at its boundary: the per-device queue cap, the
/// time-to-live, read-once, and that only delivered envelopes can be marked read.
async fn receipt_limits_at_the_store<S: Store>(store: S) {
    let limits = ReceiptLimits {
        max_queued: 3,
        ttl_ms: 10_000,
    };
    let mailbox = MailboxLimits {
        max_count: 100,
        max_bytes: 1 << 20,
        sender_max_count: 100,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    for u in ["alice", "bob"] {
        assert!(store.register(&a(u), &[7; 32], 1, 16).await.unwrap());
    }
    for i in 0..5u8 {
        store
            .enqueue(
                &a("alice"),
                vec![a("bob")],
                vec![i],
                vec![i; 4],
                1000,
                mailbox,
            )
            .await
            .unwrap();
    }
    let ids: Vec<u64> = store
        .pending(&a("bob"), 0, 10, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.envelope_id)
        .collect();
    // Five delivered, but Alice's queue holds at most three receipts: the boundary.
    store.ack(&a("bob"), ids, 1000, limits).await.unwrap();
    let queued = store.receipts(&a("alice"), 0, 100).await.unwrap();
    assert_eq!(
        queued
            .iter()
            .map(|r| r.message_id.clone())
            .collect::<Vec<_>>(),
        [vec![0], vec![1], vec![2]]
    );
    // Once Alice acknowledges one, there is room for one more (a later delivery).
    store
        .ack_receipts(&a("alice"), vec![queued[0].receipt_id])
        .await
        .unwrap();
    store
        .enqueue(
            &a("alice"),
            vec![a("bob")],
            vec![7],
            vec![7; 4],
            5000,
            mailbox,
        )
        .await
        .unwrap();
    let last = store.pending(&a("bob"), 0, 10, 5000).await.unwrap();
    store
        .ack(&a("bob"), vec![last[0].envelope_id], 5000, limits)
        .await
        .unwrap();
    let now = store.receipts(&a("alice"), 0, 100).await.unwrap();
    assert_eq!(
        now.iter().map(|r| r.message_id.clone()).collect::<Vec<_>>(),
        [vec![1], vec![2], vec![7]]
    );
    // Queued receipts expire at their ttl: those made at 1000 go at 11000, the one made at
    // 5000 stays until 15000.
    store.expire(1000 + 9_999, limits).await.unwrap();
    assert_eq!(store.receipts(&a("alice"), 0, 100).await.unwrap().len(), 3);
    store.expire(1000 + 10_000, limits).await.unwrap();
    let left = store.receipts(&a("alice"), 0, 100).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|r| r.message_id.clone())
            .collect::<Vec<_>>(),
        [vec![7]]
    );
    // Removal: the device's key is revoked, its slot can be taken by another key only.
    assert!(store.remove_device(&a("bob")).await.unwrap());
    assert!(!store.remove_device(&a("bob")).await.unwrap());
    assert!(matches!(
        store.register(&a("bob"), &[7; 32], 1, 16).await,
        Err(hush_relay::store::StoreError::Revoked)
    ));
    assert!(store.register(&a("bob"), &[8; 32], 1, 16).await.unwrap());
    // The device cap, at its boundary.
    let dev = |d| Addr {
        user: "carol".into(),
        device: d,
    };
    assert!(store.register(&dev(1), &[1; 32], 1, 2).await.unwrap());
    assert!(store.register(&dev(2), &[2; 32], 1, 2).await.unwrap());
    assert!(matches!(
        store.register(&dev(3), &[3; 32], 1, 2).await,
        Err(hush_relay::store::StoreError::TooManyDevices)
    ));
    assert!(!store.register(&dev(2), &[2; 32], 1, 2).await.unwrap());
}

/// A batch of sends (a connection's consecutive `Send`s, one store job or one PostgreSQL
/// round trip) keeps each envelope on its own: an unknown recipient refuses that envelope
/// alone, a full mailbox refuses its recipient alone (the envelope goes to the others), and
/// every recipient gets its envelopes in the batch's order.
async fn sends_in_one_batch_are_each_on_their_own<S: Store>(store: S) {
    use hush_relay::store::{Outgoing, StoreError};
    let limits = MailboxLimits {
        max_count: 3,
        max_bytes: 1 << 20,
        sender_max_count: 100,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    for u in ["alice", "bob", "carol"] {
        assert!(store.register(&a(u), &[7; 32], 1, 16).await.unwrap());
    }
    let out = |to: &[&str], id: u8| Outgoing {
        recipients: to.iter().map(|u| a(u)).collect(),
        message_id: vec![id],
        ciphertext: vec![id; 8],
        franking_commitment: None,
    };
    let batch = vec![
        out(&["bob", "carol"], 1),
        out(&["bob", "nobody"], 2),
        out(&["bob"], 3),
        out(&["bob", "carol"], 4),
        out(&["bob", "carol"], 5),
        out(&["bob"], 6),
    ];
    let results = store.enqueue_many(&a("alice"), batch, 1000, limits).await;
    assert_eq!(results.len(), 6);
    assert!(
        matches!(&results[0], Ok(r) if r.is_empty()),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1], Err(StoreError::UnknownRecipient(r)) if r.user == "nobody"),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Ok(r) if r.is_empty()),
        "{:?}",
        results[2]
    );
    // Bob's mailbox (3) is full after 1, 3 and 4: 5 goes to Carol alone, 6 to nobody.
    assert!(
        matches!(&results[3], Ok(r) if r.is_empty()),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Ok(r) if matches!(r.as_slice(), [StoreError::MailboxFull(x)] if x.user == "bob")),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(&results[5], Err(StoreError::MailboxFull(x)) if x.user == "bob"),
        "{:?}",
        results[5]
    );
    let ids = |user: &str| {
        let store = &store;
        let user = user.to_string();
        async move {
            store
                .pending(&a(&user), 0, 10, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.message_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("bob").await, [vec![1], vec![3], vec![4]]);
    assert_eq!(ids("carol").await, [vec![1], vec![4], vec![5]]);
}

async fn batches_at_the_store(b: Backend) {
    match store_of(b, "store-batch").await {
        Stores::Sqlite(s) => sends_in_one_batch_are_each_on_their_own(s).await,
        Stores::Postgres(s) => sends_in_one_batch_are_each_on_their_own(s).await,
    }
}

async fn receipt_and_device_limits_at_the_store(b: Backend) {
    match store_of(b, "store-limits").await {
        Stores::Sqlite(s) => receipt_limits_at_the_store(s).await,
        Stores::Postgres(s) => receipt_limits_at_the_store(s).await,
    }
}

on_both_backends!(
    no_receipts_can_be_forged_at_the_relay,
    ack_lists_are_capped_and_charged,
    device_cap_removal_and_revoked_links,
    receipt_and_device_limits_at_the_store,
    prekey_drain_is_bounded,
    mailbox_flooding_takes_only_a_share,
    slow_clients_are_cut_off_and_capped,
    blob_tokens_and_bytes_are_rationed,
    registration_goes_through_the_operators_check,
    presence_floods_learn_nothing,
    batches_at_the_store,
);
