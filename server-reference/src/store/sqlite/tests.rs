#![allow(clippy::unwrap_used)]

use super::schema::migrate_to;
use super::wal::WAL_RESET_FRAMES;
use super::*;
use crate::store::{error_chain, inspect};

#[test]
fn database_errors_keep_their_source() {
    let e = StoreError::from(rusqlite::Error::InvalidQuery);
    let source = e
        .database_error()
        .and_then(|s| s.downcast_ref::<rusqlite::Error>());
    assert!(matches!(source, Some(rusqlite::Error::InvalidQuery)));
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(
        error_chain(&e),
        format!("database error: {}", rusqlite::Error::InvalidQuery)
    );
    // A failed batch hands every operation in it the same error.
    assert!(
        matches!(e.clone(), StoreError::Database(s) if s.to_string() == source.unwrap().to_string())
    );
}

const RECEIPTS: ReceiptLimits = ReceiptLimits {
    max_queued: 100,
    ttl_ms: 60_000,
};

fn addr(user: &str) -> Addr {
    Addr {
        user: user.into(),
        device: 1,
    }
}

/// A relay database from before migrations 4 and 5, with mail queued in the old layout
/// (one single-recipient and one two-recipient message) and a receipt waiting, opened by
/// this version: the mail and the receipt are still there, usage is counted from the
/// mail, acknowledgements work, and new envelope and receipt ids continue right after
/// the old sequences.
#[tokio::test]
async fn migrations_keep_queued_mail_and_ids() {
    let (dir, path) = scratch("migrate");
    {
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        migrate_to(&mut c, 3).unwrap();
        c.execute_batch(
            "INSERT INTO devices VALUES ('alice', 1, x'01', 0), ('bob', 1, x'02', 0), ('carol', 1, x'03', 0);
                 INSERT INTO messages VALUES (7, 'alice', 1, x'6d31', 1000, 9999999999999, x'6331', 1);
                 INSERT INTO messages VALUES (8, 'alice', 1, x'6d32', 1001, 9999999999999, x'6332', 2);
                 INSERT INTO mailbox VALUES (41, 'bob', 1, 7, 2, 9999999999999);
                 INSERT INTO mailbox VALUES (42, 'bob', 1, 8, 2, 9999999999999);
                 INSERT INTO mailbox VALUES (43, 'carol', 1, 8, 2, 9999999999999);
                 INSERT INTO mailbox_usage VALUES ('bob', 1, 2, 4), ('carol', 1, 1, 2);
                 UPDATE sqlite_sequence SET seq = 1000 WHERE name = 'mailbox';
                 INSERT INTO receipts VALUES (500, 'alice', 1, 1, 'dave', 1, x'6d30', 900);
                 UPDATE sqlite_sequence SET seq = 600 WHERE name = 'receipts';",
        )
        .unwrap();
    }
    // A clock of 0: the ids come from the old sequences alone.
    let store = SqliteStore::open_at(&path, 0).unwrap();
    let bob = store.pending(&addr("bob"), 0, 10, 2000).await.unwrap();
    let got: Vec<_> = bob
        .iter()
        .map(|e| (e.envelope_id, e.message_id.clone(), e.ciphertext.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (41, b"m1".to_vec(), b"c1".to_vec()),
            (42, b"m2".to_vec(), b"c2".to_vec())
        ]
    );
    assert_eq!(bob[0].sender, addr("alice"));
    // Bob's mailbox holds 2 envelopes: with a cap of 3, one more fits and then no more.
    let limits = MailboxLimits {
        max_count: 3,
        max_bytes: 1 << 20,
        sender_max_count: u64::MAX,
        sender_max_bytes: u64::MAX,
        ttl_ms: 1000,
    };
    store
        .enqueue(
            &addr("alice"),
            vec![addr("bob")],
            b"m3".to_vec(),
            b"c3".to_vec(),
            2000,
            limits,
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .enqueue(
                &addr("alice"),
                vec![addr("bob")],
                b"m4".to_vec(),
                b"c4".to_vec(),
                2000,
                limits
            )
            .await,
        Err(StoreError::MailboxFull(_))
    ));
    let bob = store.pending(&addr("bob"), 42, 10, 2000).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(
        bob[0].envelope_id, 1001,
        "ids continue after the old sequence"
    );
    assert_eq!(bob[0].ciphertext, b"c3");
    // Acknowledging the shared message for Bob keeps it for Carol; both acks free it.
    assert_eq!(
        store
            .ack(&addr("bob"), vec![41, 42], 3000, RECEIPTS)
            .await
            .unwrap(),
        vec![addr("alice")]
    );
    let carol = store.pending(&addr("carol"), 0, 10, 3000).await.unwrap();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0].ciphertext, b"c2");
    store
        .ack(&addr("carol"), vec![43], 3000, RECEIPTS)
        .await
        .unwrap();
    let receipts = store.receipts(&addr("alice"), 0, 10).await.unwrap();
    let ids: Vec<u64> = receipts.iter().map(|r| r.receipt_id).collect();
    assert_eq!(ids, vec![500, 601, 602, 603]);
    assert_eq!(receipts[0].message_id, b"m0");
    let seen = inspect(&path).unwrap();
    assert_eq!(seen.queued.len(), 1);
    drop(store);
    let c = Connection::open(&path).unwrap();
    let messages: i64 = c
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        messages, 0,
        "shared messages freed once every recipient acknowledged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An empty directory for one test's database, and the database's path in it.
fn scratch(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("hush-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.db");
    (dir, path)
}

/// A new store at `path` with the clock at 1 ms, where Alice and Bob are registered.
async fn store_with_alice_and_bob(path: &Path) -> SqliteStore {
    let store = SqliteStore::open_at(path, 1).unwrap();
    for who in ["alice", "bob"] {
        assert!(store.register(&addr(who), &[1; 32], 1, 16).await.unwrap());
    }
    store
}

async fn send_to_bob(store: &SqliteStore, n: usize) {
    let limits = MailboxLimits {
        max_count: 1000,
        max_bytes: 1 << 20,
        sender_max_count: u64::MAX,
        sender_max_bytes: u64::MAX,
        ttl_ms: 1 << 40,
    };
    for i in 0..n {
        store
            .enqueue(
                &addr("alice"),
                vec![addr("bob")],
                vec![i as u8],
                b"c".to_vec(),
                1,
                limits,
            )
            .await
            .unwrap();
    }
}

async fn queued_for_bob(store: &SqliteStore) -> Vec<u64> {
    let queued = store.pending(&addr("bob"), 0, 1000, 1).await.unwrap();
    queued.iter().map(|e| e.envelope_id).collect()
}

/// Closes `store` and waits until its database thread has closed the database (the
/// WAL goes when the last connection closes).
async fn close(store: SqliteStore, path: &Path) {
    drop(store);
    let wal = path.with_extension("db-wal");
    for _ in 0..500 {
        if !wal.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the database thread did not close the database");
}

/// Envelope ids are never handed out twice: not after a restart with every envelope
/// acknowledged (the high-water mark), and not after a restore from a copy made before
/// later envelopes were sent (the clock at start). The clock is given in milliseconds;
/// ids start at 1,024 per millisecond.
#[tokio::test]
async fn ids_are_not_reused_after_a_restart_or_a_restore() {
    let (dir, path) = scratch("ids");
    let backup = dir.join("backup.db");

    let store = store_with_alice_and_bob(&path).await;
    send_to_bob(&store, 1).await;
    assert_eq!(queued_for_bob(&store).await, vec![1024]);
    Connection::open(&path)
        .unwrap()
        .execute(
            "VACUUM INTO ?1",
            rusqlite::params![backup.to_str().unwrap()],
        )
        .unwrap();
    send_to_bob(&store, 9).await;
    let handed_out = queued_for_bob(&store).await;
    assert_eq!(handed_out, (1024..1034).collect::<Vec<_>>());
    store
        .ack(&addr("bob"), handed_out.clone(), 1, RECEIPTS)
        .await
        .unwrap();
    assert!(queued_for_bob(&store).await.is_empty());
    close(store, &path).await;

    // Restarted with the same clock and an empty mailbox: the mark keeps ids going up.
    let store = SqliteStore::open_at(&path, 1).unwrap();
    send_to_bob(&store, 1).await;
    let after_restart = queued_for_bob(&store).await;
    assert_eq!(after_restart.len(), 1);
    assert!(after_restart[0] > 1033, "{after_restart:?}");
    close(store, &path).await;

    // Restored from the copy, which holds envelope 1024 and a mark below 1034, a
    // millisecond later: ids start from the clock.
    std::fs::copy(&backup, &path).unwrap();
    let store = SqliteStore::open_at(&path, 2).unwrap();
    assert_eq!(queued_for_bob(&store).await, vec![1024]);
    send_to_bob(&store, 1).await;
    let after_restore = queued_for_bob(&store).await;
    assert_eq!(after_restore[0], 1024);
    assert!(after_restore[1] > after_restart[0], "{after_restore:?}");
    close(store, &path).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writers that never pause (eight tasks each keeping a send of 32 envelopes queued)
/// for three seconds: the WAL is written many times its reset size, and its file stays
/// small, because the writer finishes a checkpoint itself once the log is long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_writes_that_never_pause() {
    let (dir, path) = scratch("wal");
    let wal = path.with_extension("db-wal");
    let store = store_with_alice_and_bob(&path).await;
    let limits = MailboxLimits {
        max_count: u64::MAX,
        max_bytes: u64::MAX,
        sender_max_count: u64::MAX,
        sender_max_bytes: u64::MAX,
        ttl_ms: 1 << 40,
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut writers = vec![];
    for _ in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            while std::time::Instant::now() < until {
                let batch = (0..32)
                    .map(|i| Outgoing {
                        recipients: vec![addr("bob")],
                        message_id: vec![i],
                        ciphertext: vec![0x42; 1024],
                        franking_commitment: Some([i; 32]),
                    })
                    .collect();
                for r in store.enqueue_many(&addr("alice"), batch, 1, limits).await {
                    r.unwrap();
                }
                bytes += 32 * 1024;
            }
            bytes
        }));
    }
    let mut largest = 0;
    while std::time::Instant::now() < until {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let reset_bytes = WAL_RESET_FRAMES as u64 * 4096;
    assert!(written > 20 * reset_bytes, "only {written} bytes written");
    // Without the writer's checkpoints the WAL holds more than what was written.
    assert!(
        largest < written / 4,
        "WAL reached {largest} bytes after {written} bytes of envelopes"
    );
    close(store, &path).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mailbox counts the database thread keeps in memory (per device, and per sending user
/// within it) stay equal to the mailbox's own, through single- and multi-recipient sends
/// from two users and acknowledgements, each compared with a fresh read.
#[tokio::test]
async fn remembered_counts_match_the_mailbox() {
    let (dir, path) = scratch("memo");
    let store = store_with_alice_and_bob(&path).await;
    assert!(
        store
            .register(&addr("carol"), &[3; 32], 1, 16)
            .await
            .unwrap()
    );
    let limits = MailboxLimits {
        max_count: 1000,
        max_bytes: 1 << 20,
        sender_max_count: 1000,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    // What the memo says of Bob's mailbox, and what a fresh read says.
    let counts = |store: &SqliteStore| {
        let store = store.clone();
        async move {
            store
                .call_delivering(|db| {
                    let bob = addr("bob");
                    let read = |r: &mut memo::Reader<'_>, m: &mut memo::Memo| {
                        Ok((
                            m.usage(r, &bob)?,
                            m.share(r, &bob, "alice")?,
                            m.share(r, &bob, "carol")?,
                        ))
                    };
                    let kept = db.memos.with(&db.conn, &bob, read)?;
                    let fresh = Memos::default().with(&db.conn, &bob, read)?;
                    Ok(((kept, fresh), Vec::new()))
                })
                .await
                .unwrap()
        }
    };
    // Read once, so that every later write must keep the counts in step.
    let (kept, fresh) = counts(&store).await;
    assert_eq!(kept, fresh);
    for i in 0..6u8 {
        let (from, to) = match i % 3 {
            0 => ("alice", vec![addr("bob")]),
            1 => ("carol", vec![addr("bob"), addr("alice")]),
            _ => ("alice", vec![addr("bob"), addr("carol")]),
        };
        let body = vec![i; 10 + usize::from(i)];
        store
            .enqueue(&addr(from), to, vec![i], body, 1, limits)
            .await
            .unwrap();
        let (kept, fresh) = counts(&store).await;
        assert_eq!(kept, fresh, "after send {i}");
    }
    let (kept, _) = counts(&store).await;
    assert_eq!(kept.0, (6, 10 + 11 + 12 + 13 + 14 + 15));
    assert_eq!(kept.1.0 + kept.2.0, 6);
    let mut queued = queued_for_bob(&store).await;
    let rest = queued.split_off(3);
    for ids in [queued, rest] {
        store.ack(&addr("bob"), ids, 2, RECEIPTS).await.unwrap();
        let (kept, fresh) = counts(&store).await;
        assert_eq!(kept, fresh);
    }
    assert_eq!(counts(&store).await.0, ((0, 0), (0, 0), (0, 0)));
    // Sends to made-up addresses leave nothing remembered.
    let remembered = || {
        let store = store.clone();
        async move {
            store
                .call_delivering(|db| Ok((db.memos.len(), Vec::new())))
                .await
                .unwrap()
        }
    };
    let before = remembered().await;
    for i in 0..20u8 {
        let nobody = Addr {
            user: format!("nobody{i}"),
            device: 1,
        };
        let refused = store
            .enqueue(&addr("alice"), vec![nobody], vec![i], vec![1], 1, limits)
            .await;
        assert!(matches!(refused, Err(StoreError::UnknownRecipient(_))));
    }
    assert_eq!(remembered().await, before);
    close(store, &path).await;
    let _ = std::fs::remove_dir_all(dir);
}
