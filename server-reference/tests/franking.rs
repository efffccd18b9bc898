//! Message franking at the relay (SPEC §17), on both backends: a franked send is stored
//! with its commitment and each recipient gets the relay's tag for it; a report verifies
//! and is kept once; forged reports (changed message, another sender, a tag replayed by
//! another recipient, another time, another key) are refused; the daily cap at its
//! boundary; the relay's franking key is made once and kept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use hush_crypto::franking::{self, FrankingKey};
use hush_relay::Store;

fn franked(to: &[(&str, u32)], mid: &[u8], commitment: &[u8; 32]) -> In {
    let In::Send(mut s) = send_to(to, mid, b"sealed") else {
        unreachable!()
    };
    s.franking_commitment = commitment.to_vec();
    In::Send(s)
}

fn report(
    sender: (&str, u32),
    e: &proto::Envelope,
    content: &[u8],
    key: &FrankingKey,
    reason: &str,
) -> In {
    In::Report(proto::Report {
        sender: Some(addr(sender.0, sender.1)),
        server_timestamp_ms: e.server_timestamp_ms,
        content: content.to_vec(),
        franking_key: key.expose().to_vec(),
        franking_commitment: e.franking_commitment.clone(),
        franking_tag: e.franking_tag.clone(),
        reason: reason.into(),
        consent: "I send this message, its sender and its time to the operator".into(),
    })
}

async fn reports_of(db: &Db) -> Vec<hush_relay::store::StoredReport> {
    match db.backend {
        Backend::Sqlite => hush_relay::SqliteStore::open(&db.path)
            .unwrap()
            .reports()
            .await
            .unwrap(),
        Backend::Postgres => hush_relay::PgStore::connect(PG_URL, Some(&db.schema), 2)
            .await
            .unwrap()
            .reports()
            .await
            .unwrap(),
    }
}

async fn reports_verify_and_forgeries_do_not(b: Backend) {
    let db = b.db("franking").await;
    let relay = start(db, |c| c.max_reports_per_day = 2).await;
    let (mut mallory, _) = registered(&relay, "mallory").await;
    let (mut alice, _) = registered(&relay, "alice").await;
    let (mut bob, _) = registered(&relay, "bob").await;
    let key = FrankingKey::generate(&mut rand::rng());
    let content = b"an abusive message";
    let cf = franking::commit(&key, content);
    // One franked envelope for Alice and Bob, one unfranked for Alice.
    assert!(matches!(
        mallory
            .call(franked(&[("alice", 1), ("bob", 1)], b"m1", &cf))
            .await,
        Out::Sent(_)
    ));
    assert!(matches!(
        mallory.call(send_to(&[("alice", 1)], b"m2", b"x")).await,
        Out::Sent(_)
    ));
    let to_alice = alice.envelope().await;
    let to_bob = bob.envelope().await;
    let plain = alice.envelope().await;
    assert_eq!(to_alice.franking_commitment, cf);
    assert!(plain.franking_commitment.is_empty() && plain.franking_tag.is_empty());
    // Each tag binds the recipient: Alice's and Bob's differ.
    assert_eq!(to_alice.franking_tag.len(), 32);
    assert_ne!(to_alice.franking_tag, to_bob.franking_tag);

    // Forgeries, each refused with REPORT_REFUSED and nothing kept.
    let other_key = FrankingKey::generate(&mut rand::rng());
    let mut other_time = to_alice.clone();
    other_time.server_timestamp_ms += 1;
    let mut bobs_tag = to_alice.clone();
    bobs_tag.franking_tag = to_bob.franking_tag.clone();
    let mut other_commitment = to_alice.clone();
    other_commitment.franking_commitment = franking::commit(&other_key, b"never sent").to_vec();
    for (what, forged) in [
        (
            "a changed message",
            report(("mallory", 1), &to_alice, b"a harmless message", &key, ""),
        ),
        (
            "another sender",
            report(("bob", 1), &to_alice, content, &key, ""),
        ),
        (
            "a tag issued to Bob",
            report(("mallory", 1), &bobs_tag, content, &key, ""),
        ),
        (
            "another time",
            report(("mallory", 1), &other_time, content, &key, ""),
        ),
        (
            "another key and commitment",
            report(
                ("mallory", 1),
                &other_commitment,
                b"never sent",
                &other_key,
                "",
            ),
        ),
    ] {
        let out = alice.call(forged).await;
        assert_eq!(code(&out), ErrorCode::ReportRefused, "{what}: {out:?}");
    }
    // Bob cannot report Alice's copy either (the tag is Alice's).
    let out = bob
        .call(report(("mallory", 1), &to_alice, content, &key, ""))
        .await;
    assert_eq!(code(&out), ErrorCode::ReportRefused);

    // The real report is kept, once.
    for _ in 0..2 {
        let out = alice
            .call(report(("mallory", 1), &to_alice, content, &key, "threats"))
            .await;
        assert!(matches!(out, Out::Done(_)), "{out:?}");
    }
    // The cap: Alice's user makes 2 reports a day (this is the second), a third is refused.
    // (Each message its own franking key, as clients do: two messages with one commitment
    // in the same millisecond would have one tag, and be one report.)
    let keys = [
        FrankingKey::generate(&mut rand::rng()),
        FrankingKey::generate(&mut rand::rng()),
    ];
    for (mid, key) in [b"m3", b"m4"].iter().zip(&keys) {
        let cf = franking::commit(key, b"again");
        assert!(matches!(
            mallory.call(franked(&[("alice", 1)], *mid, &cf)).await,
            Out::Sent(_)
        ));
    }
    let third = alice.envelope().await;
    let fourth = alice.envelope().await;
    let out = alice
        .call(report(("mallory", 1), &third, b"again", &keys[0], ""))
        .await;
    assert!(matches!(out, Out::Done(_)), "{out:?}");
    let out = alice
        .call(report(("mallory", 1), &fourth, b"again", &keys[1], ""))
        .await;
    assert_eq!(code(&out), ErrorCode::RateLimited);

    // The operator's list: two reports, in order, with what they reveal.
    let db = relay.stop().await;
    let kept = reports_of(&db).await;
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].content, content);
    assert_eq!(kept[0].reason, "threats");
    assert_eq!(
        kept[0].consent,
        "I send this message, its sender and its time to the operator"
    );
    assert_eq!(
        (kept[0].sender.user.as_str(), kept[0].reporter.user.as_str()),
        ("mallory", "alice")
    );
    assert_eq!(kept[0].server_ms, to_alice.server_timestamp_ms);
    assert_eq!(kept[1].content, b"again");

    // The key is made once and kept: asking again (as a restarted relay or another node
    // does) gives the same one, whatever fresh key is offered.
    let keys = match db.backend {
        Backend::Sqlite => {
            let s = hush_relay::SqliteStore::open(&db.path).unwrap();
            [
                s.franking_key([1; 32]).await.unwrap(),
                s.franking_key([2; 32]).await.unwrap(),
            ]
        }
        Backend::Postgres => {
            let s = hush_relay::PgStore::connect(PG_URL, Some(&db.schema), 2)
                .await
                .unwrap();
            [
                s.franking_key([1; 32]).await.unwrap(),
                s.franking_key([2; 32]).await.unwrap(),
            ]
        }
    };
    assert_eq!(keys[0], keys[1]);
    assert!(
        keys[0] != [1; 32] && keys[0] != [2; 32],
        "the relay's own key was kept"
    );
}

on_both_backends!(reports_verify_and_forgeries_do_not);
