//! Sharding on two real PostgreSQL servers (issue 19): the machine's one on 5432 as shard 0,
//! and a second one this test starts on a free loopback port with the machine's own
//! `initdb` and `pg_ctl`, in a temporary directory, and stops at the end. Then the faults:
//! that server restarted (fast and immediate shutdown) under a steady load, and down while
//! the other shard keeps serving its users.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_macros)]
#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use hush_relay::pg::shard_of;
use hush_relay::store::{Addr, MailboxLimits, ReceiptLimits, StoreError};
use hush_relay::{PgStore, ShardedPgStore, Store};

/// A PostgreSQL server of the test's own, stopped (immediately) and deleted on drop.
struct SecondPg {
    dir: PathBuf,
    port: u16,
}

/// Runs a PostgreSQL program as the `postgres` user when the test runs as root (the server
/// refuses to run as root), as the test's user otherwise.
fn pg_command(program: &str, args: &[&str]) -> std::process::Output {
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success() || program == "pg_ctl",
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl SecondPg {
    async fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hush-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
            let out = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let data = dir.join("data");
        pg_command(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        // A free loopback port: bound, read, released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self { dir, port };
        pg.ctl_start();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_string()
    }

    fn ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        let out = pg_command(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server with this shutdown mode (`fast` or `immediate`).
    fn ctl_stop(&self, mode: &str) {
        pg_command("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for SecondPg {
    fn drop(&mut self) {
        if Path::new(&self.data()).exists() {
            pg_command(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first user named `prefix-<n>` whose shard (of two) is `shard`.
fn user_on(prefix: &str, shard: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|u| shard_of(u, 2) == shard)
        .unwrap()
}

fn a(user: &str) -> Addr {
    Addr {
        user: user.into(),
        device: 1,
    }
}

const LIMITS: MailboxLimits = MailboxLimits {
    max_count: 10_000,
    max_bytes: 100 << 20,
    sender_max_count: 10_000,
    sender_max_bytes: 100 << 20,
    ttl_ms: 86_400_000,
};
const RECEIPTS: ReceiptLimits = ReceiptLimits {
    max_queued: 100_000,
    ttl_ms: 86_400_000,
};

/// The two shards: this test's schema on the machine's server, and the second server.
async fn sharded(db: &Db, second: &SecondPg) -> ShardedPgStore {
    ShardedPgStore::connect(&[PG_URL, &second.url()], Some(&db.schema), 4)
        .await
        .unwrap()
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A database listed twice is refused; a first start that stopped half way is finished.
/// Users live on their shard only; a send to recipients on both shards is stored on each;
/// an acknowledgement on one shard queues the "delivered" receipt on the sender's; presence
/// is on the user's shard; blobs and reports on shard 0; `hush_shard` in SQL is `shard_of`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_route_by_user() {
    let db = Backend::Postgres.db("pg-shards-route").await;
    let second = SecondPg::start("route").await;
    // A database listed twice is refused, at once.
    assert!(
        ShardedPgStore::connect(&[PG_URL, PG_URL], Some(&db.schema), 4)
            .await
            .is_err()
    );
    // A first start that stopped half way (the second server already settled as shard 1 of
    // 2, shard 0 not yet) is finished by the next.
    drop(
        PgStore::connect(&second.url(), Some(&db.schema), 2)
            .await
            .unwrap(),
    );
    sql(&second.url())
        .await
        .batch_execute(&format!(
            "INSERT INTO {}.hush_shard_index (shard, shards) VALUES (1, 2)",
            db.schema
        ))
        .await
        .unwrap();
    let store = sharded(&db, &second).await;
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let p = pushed.clone();
    assert!(store.deliver_on_commit(Arc::new(move |d| p.lock().unwrap().extend(d))));
    let (alice, carol, bob) = (
        a(&user_on("alice", 0)),
        a(&user_on("carol", 0)),
        a(&user_on("bob", 1)),
    );
    for (who, key) in [(&alice, 1u8), (&carol, 2), (&bob, 3)] {
        assert!(store.register(who, &[key; 32], 1000, 16).await.unwrap());
    }
    // Each user's registration is on its own server only.
    let (s0, s1) = (sql(PG_URL).await, sql(&second.url()).await);
    let users = |c: tokio_postgres::Client, schema: String| async move {
        let rows = c
            .query(
                &format!("SELECT user_id FROM {schema}.devices ORDER BY user_id"),
                &[],
            )
            .await
            .unwrap();
        (
            c,
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>(),
        )
    };
    let (s0, on0) = users(s0, db.schema.clone()).await;
    let (s1, on1) = users(s1, db.schema.clone()).await;
    let mut expected0 = vec![alice.user.clone(), carol.user.clone()];
    expected0.sort();
    assert_eq!(on0, expected0);
    assert_eq!(on1, vec![bob.user.clone()]);

    // One send, both shards.
    let to = {
        let mut to = vec![alice.clone(), bob.clone(), carol.clone()];
        to.sort();
        to.retain(|r| *r != alice);
        to
    };
    let refused = store
        .enqueue(&alice, to, b"m1".to_vec(), b"hello".to_vec(), 2000, LIMITS)
        .await
        .unwrap();
    assert!(refused.is_empty());
    let for_bob = store.pending(&bob, 0, 10, 2000).await.unwrap();
    let for_carol = store.pending(&carol, 0, 10, 2000).await.unwrap();
    assert_eq!((for_bob.len(), for_carol.len()), (1, 1));
    assert_eq!(for_bob[0].ciphertext, b"hello");
    // Bob acknowledges on shard 1; alice's receipt is queued on shard 0.
    let senders = store
        .ack(&bob, vec![for_bob[0].envelope_id], 3000, RECEIPTS)
        .await
        .unwrap();
    assert_eq!(senders, vec![alice.clone()]);
    let receipts = store.receipts(&alice, 0, 10).await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        (&receipts[0].recipient, &receipts[0].message_id[..]),
        (&bob, &b"m1"[..])
    );
    async fn queued(c: &tokio_postgres::Client, schema: &str, user: &str) -> i64 {
        let q = format!("SELECT COUNT(*) FROM {schema}.receipts WHERE user_id = $1");
        c.query_one(&q, &[&user]).await.unwrap().get::<_, i64>(0)
    }
    assert_eq!(queued(&s0, &db.schema, &alice.user).await, 1);
    assert_eq!(queued(&s1, &db.schema, &alice.user).await, 0);
    // The receipt was pushed, with the envelopes.
    {
        let pushed = pushed.lock().unwrap();
        assert_eq!(pushed.len(), 3);
        assert!(pushed.iter().any(|d| matches!(d,
            hush_relay::store::Delivery::Receipt { to, receipt, .. }
                if *to == alice && receipt.receipt_id == receipts[0].receipt_id)));
    }
    // An unknown recipient on shard 1 refuses the send.
    let ghost = a(&user_on("ghost", 1));
    assert!(matches!(
        store
            .enqueue(&alice, vec![ghost.clone()], b"m2".to_vec(), b"x".to_vec(), 2000, LIMITS)
            .await,
        Err(StoreError::UnknownRecipient(g)) if g == ghost
    ));
    // Presence on the user's shard.
    store.touch(&bob.user, 5000).await.unwrap();
    assert_eq!(
        store.presence(&bob.user).await.unwrap(),
        Some((5000, false))
    );
    let seen: i64 = s1
        .query_one(
            &format!(
                "SELECT last_seen_ms FROM {}.presence WHERE user_id = $1",
                db.schema
            ),
            &[&bob.user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 5000);
    // Blobs on shard 0.
    store.put_blob("b1", 10, 9000).await.unwrap();
    let blobs: i64 = s0
        .query_one(&format!("SELECT COUNT(*) FROM {}.blobs", db.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(blobs, 1);
    assert_eq!(store.blob("b1", 1000).await.unwrap(), Some(10));
    // A removed device's upload tokens (on shard 0) go with it.
    store.put_upload_token([9; 32], &bob, 99_999).await.unwrap();
    assert!(store.remove_device(&bob).await.unwrap());
    assert_eq!(store.take_upload_token([9; 32], 1000).await.unwrap(), None);
    // The SQL function agrees with shard_of, for any number of shards.
    for n in 1..=6i32 {
        let names: Vec<String> = (0..300).map(|i| format!("u{i}.x-{n}")).collect();
        let rows = s0
            .query(
                &format!(
                    "SELECT {}.hush_shard(u, $2) FROM UNNEST($1::TEXT[]) WITH ORDINALITY AS t(u, i) ORDER BY i",
                    db.schema
                ),
                &[&names, &n],
            )
            .await
            .unwrap();
        for (name, r) in names.iter().zip(rows) {
            assert_eq!(
                r.get::<_, i32>(0) as usize,
                shard_of(name, n as usize),
                "{name} of {n}"
            );
        }
    }
    drop(store);
    PgStore::drop_schema(PG_URL, &db.schema).await.unwrap();
}

/// What one sender stored for one recipient, in order, and the message ids whose sends
/// failed at least once.
type Sent = (Vec<Vec<u8>>, HashSet<Vec<u8>>);

/// Senders on shard 0 send steadily to recipients on the second server, which is stopped
/// (fast shutdown), started, stopped (immediate shutdown) and started again mid-load. A send
/// that fails is sent again, the same message id, until it is stored. Then: every stored
/// envelope arrives, each pair's in the order sent, and a message id arrives twice only if
/// a send of it failed (its outcome unknown: the commit may have landed before the server
/// went). Recipients acknowledge as they read, so receipts cross to shard 0 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_under_load_loses_nothing_acknowledged() {
    let db = Backend::Postgres.db("pg-shards-restart").await;
    let second = SecondPg::start("restart").await;
    let store = sharded(&db, &second).await;
    let senders: Vec<Addr> = (0..3).map(|i| a(&user_on(&format!("s{i}"), 0))).collect();
    let recipients: Vec<Addr> = (0..2).map(|i| a(&user_on(&format!("r{i}"), 1))).collect();
    for (i, who) in senders.iter().chain(&recipients).enumerate() {
        store.register(who, &[i as u8; 32], 1000, 16).await.unwrap();
    }
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // (sender, recipient) → the message ids stored, in order; and those whose send failed.
    let mut tasks = Vec::new();
    for s in &senders {
        for r in &recipients {
            let (store, s, r, running) = (store.clone(), s.clone(), r.clone(), running.clone());
            tasks.push(tokio::spawn(async move {
                let (mut stored, mut failed) = (Vec::new(), HashSet::new());
                let mut n = 0u32;
                let mut retrying = false;
                // A failed send is sent again even after the load stops: its first try may
                // have been stored.
                while retrying || running.load(std::sync::atomic::Ordering::SeqCst) {
                    let mid = n.to_be_bytes().to_vec();
                    match store
                        .enqueue(&s, vec![r.clone()], mid.clone(), vec![7; 100], 2000, LIMITS)
                        .await
                    {
                        // Refused: the recipient's shard failed (nothing stored for it).
                        Ok(refused) if !refused.is_empty() => {
                            assert!(matches!(
                                refused.as_slice(),
                                [StoreError::RecipientUnavailable(_)]
                            ));
                            failed.insert(mid);
                            retrying = true;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(_) => {
                            stored.push(mid);
                            n += 1;
                            retrying = false;
                        }
                        Err(_) => {
                            failed.insert(mid);
                            retrying = true;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                ((s, r), stored, failed)
            }));
        }
    }
    // Readers: read and acknowledge what arrives.
    let mut readers = Vec::new();
    for r in &recipients {
        let (store, r, running) = (store.clone(), r.clone(), running.clone());
        readers.push(tokio::spawn(async move {
            let mut got: Vec<(Addr, Vec<u8>)> = Vec::new();
            let mut cursor = 0;
            let mut idle_after_stop = 0;
            loop {
                let stopping = !running.load(std::sync::atomic::Ordering::SeqCst);
                match store.pending(&r, cursor, 200, 2000).await {
                    Ok(batch) if batch.is_empty() => {
                        if stopping {
                            idle_after_stop += 1;
                            if idle_after_stop > 5 {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(batch) => {
                        let ids: Vec<u64> = batch.iter().map(|e| e.envelope_id).collect();
                        for e in batch {
                            assert!(e.envelope_id > cursor, "ids ascend");
                            cursor = e.envelope_id;
                            got.push((e.sender, e.message_id));
                        }
                        // An acknowledgement that fails is repeated until it holds.
                        while store.ack(&r, ids.clone(), 3000, RECEIPTS).await.is_err() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            (r, got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mode in ["fast", "immediate"] {
        second.ctl_stop(mode);
        tokio::time::sleep(Duration::from_millis(500)).await;
        second.ctl_start();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut sent: HashMap<(Addr, Addr), Sent> = HashMap::new();
    let mut failures = 0;
    for t in tasks {
        let (pair, stored, failed) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a sender hung")
            .unwrap();
        assert!(stored.len() > 10, "{pair:?} sent only {}", stored.len());
        failures += failed.len();
        sent.insert(pair, (stored, failed));
    }
    let total: usize = sent.values().map(|(stored, _)| stored.len()).sum();
    eprintln!("{total} envelopes stored, {failures} sends failed during the restarts");
    assert!(
        failures > 0,
        "the restarts failed no send: they did not happen under load"
    );
    for t in readers {
        let (r, got) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a reader hung")
            .unwrap();
        for s in &senders {
            let (stored, failed) = &sent[&(s.clone(), r.clone())];
            let mut from_s: Vec<&Vec<u8>> = got
                .iter()
                .filter(|(from, _)| from == s)
                .map(|(_, m)| m)
                .collect();
            // A repeat is allowed only right after itself, and only for a failed send.
            from_s.dedup_by(|b, a| {
                if a == b {
                    assert!(
                        failed.contains(*a),
                        "{s:?} → {r:?}: {a:?} twice, never failed"
                    );
                    true
                } else {
                    false
                }
            });
            assert_eq!(
                from_s,
                stored.iter().collect::<Vec<_>>(),
                "{s:?} → {r:?}: not every stored envelope once, in order"
            );
        }
    }
    // The "delivered" receipts crossed to shard 0, each for a message that was stored (an
    // acknowledgement whose outcome was unknown may have lost its receipts).
    let mut receipts = 0;
    for s in &senders {
        for rc in store.receipts(s, 0, 100_000).await.unwrap() {
            let (stored, _) = &sent[&(s.clone(), rc.recipient.clone())];
            assert!(
                stored.contains(&rc.message_id),
                "a receipt for nothing sent"
            );
            receipts += 1;
        }
    }
    eprintln!("{receipts} receipts crossed to shard 0");
    assert!(receipts > 0, "no receipt crossed shards");
    drop(store);
    PgStore::drop_schema(PG_URL, &db.schema).await.unwrap();
}

/// A relay over both shards, the second server stopped: shard 0's users go on at once
/// (sending, receiving, presence), a send to recipients on both shards is stored for shard
/// 0's and lists the others in `Sent.refused`, as does a send to the down shard alone, a
/// request that needs only the down shard is refused with `INTERNAL` and a retry delay
/// within seconds, not a hang, and the node stays ready. A connection of the down shard
/// whose mailbox cannot be read stays open. Started again, the down shard's users are
/// served, on the connection they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_refuses_its_users_and_the_other_serves() {
    let db = Backend::Postgres.db("pg-shards-down").await;
    let second = SecondPg::start("down").await;
    let store = sharded(&db, &second).await;
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        blob_dir: db.path.with_file_name("blobs"),
        // Carol's connection reads her mailbox while her shard is down: it stays open.
        poll_interval: Some(Duration::from_millis(100)),
        ..Config::default()
    };
    let (listen, stop, task) = spawn(config, store).await;
    let relay = TestRelay {
        addr: listen,
        stop: Some(stop),
        task,
        db: db.clone(),
    };
    let (alice, bob, carol) = (user_on("alice", 0), user_on("bob", 0), user_on("carol", 1));
    let (mut ca, _) = registered(&relay, &alice).await;
    let (mut cb, _) = registered(&relay, &bob).await;
    let (mut cc, _) = registered(&relay, &carol).await;

    second.ctl_stop("immediate");
    let bounded = Duration::from_secs(20);
    // Shard 0 serves its users.
    let out = tokio::time::timeout(bounded, ca.call(send_to(&[(&bob, 1)], b"m1", b"hi")))
        .await
        .expect("a send on the live shard hung");
    assert!(matches!(out, Out::Sent(_)), "{out:?}");
    assert_eq!(cb.envelope().await.message_id, b"m1");
    // Both shards: stored for bob, carol refused (to send again later).
    let out = tokio::time::timeout(
        bounded,
        ca.call(send_to(&[(&bob, 1), (&carol, 1)], b"m2", b"both")),
    )
    .await
    .expect("a send across shards hung");
    let Out::Sent(sent) = out else {
        panic!("{out:?}")
    };
    assert_eq!(sent.refused, vec![addr(&carol, 1)]);
    assert_eq!(cb.envelope().await.message_id, b"m2");
    // Only the down shard: refused (held by the sender for later), not an error that
    // would hold up the sender's other mail.
    let out = tokio::time::timeout(bounded, ca.call(send_to(&[(&carol, 1)], b"m3", b"x")))
        .await
        .expect("a send to the down shard hung");
    let Out::Sent(sent) = out else {
        panic!("{out:?}")
    };
    assert_eq!(sent.refused, vec![addr(&carol, 1)]);
    // A request that needs the down shard: a typed refusal with a retry delay.
    let out = tokio::time::timeout(
        bounded,
        ca.call(In::ListDevices(proto::ListDevices {
            user_id: carol.clone(),
        })),
    )
    .await
    .expect("a directory read on the down shard hung");
    let Out::Error(e) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(code(&out), ErrorCode::Internal);
    assert!(e.retry_after_ms > 0 && !e.fatal, "{e:?}");
    // The node stays ready: its other users are served.
    let readyz = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, _, _) = http(&relay, readyz.to_vec()).await;
    assert_eq!(status, 200);
    // Shard 0's presence still answers.
    let out = tokio::time::timeout(
        bounded,
        cb.call(In::Presence(proto::PresenceQuery {
            user_id: alice.clone(),
        })),
    )
    .await
    .expect("presence on the live shard hung");
    assert!(matches!(out, Out::Presence(_)), "{out:?}");

    // Back: carol's shard serves again (the pool reconnects).
    second.ctl_start();
    let mut delivered = false;
    for _ in 0..100 {
        match ca.call(send_to(&[(&carol, 1)], b"m4", b"back")).await {
            Out::Sent(s) if s.refused.is_empty() => {
                delivered = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(delivered, "the shard did not come back");
    // Carol reads from her shard: m4 (and m4 again only if a retry's outcome was unknown).
    let e = tokio::time::timeout(bounded, cc.envelope())
        .await
        .expect("carol got nothing");
    assert_eq!(e.message_id, b"m4");
    relay.stop().await;
    PgStore::drop_schema(PG_URL, &db.schema).await.unwrap();
}

/// Everything the store tells about `u`: registration, mailbox, receipts, prekey stock,
/// presence, and whether the next user may see its presence.
async fn state_of(store: &ShardedPgStore, u: &Addr, next: &Addr) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        store.device(u).await.unwrap(),
        store.pending(u, 0, 1000, 2000).await.unwrap(),
        store.receipts(u, 0, 1000).await.unwrap(),
        store.prekey_count(u).await.unwrap(),
        store.presence(&u.user).await.unwrap(),
        store
            .presence_allowed(&u.user, &next.user, 2000)
            .await
            .unwrap(),
    )
}

/// One shard with sixteen users (keys, prekeys, mailboxes with shared messages, receipts,
/// presence and grants), then a second server added with `add_shard`: the users
/// `shard_of(_, 2)` gives to shard 1 are there and only there, with everything they had,
/// the same ids included; a new envelope to a moved user gets an id above its old ones;
/// with everything acknowledged no shared message is left on either server; running it
/// again moves nothing; and the shards listed out of order are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_shard_moves_users_with_their_state() {
    use hush_relay::store::{PrekeyCaps, PrekeyUpload, StoredPrekey};
    let db = Backend::Postgres.db("pg-shards-add").await;
    let second = SecondPg::start("add").await;
    let users: Vec<Addr> = (0..16).map(|i| a(&format!("user-{i}"))).collect();
    let moving = |u: &Addr| shard_of(&u.user, 2) == 1;
    let n_moving = users.iter().filter(|u| moving(u)).count();
    assert!(n_moving > 0 && n_moving < users.len());
    let next = |i: usize| users[(i + 1) % users.len()].clone();

    let one = ShardedPgStore::connect(&[PG_URL], Some(&db.schema), 4)
        .await
        .unwrap();
    for (i, u) in users.iter().enumerate() {
        let k = i as u8;
        one.register(u, &[k; 32], 1000, 16).await.unwrap();
        let upload = PrekeyUpload {
            signed: Some((
                StoredPrekey {
                    id: 1,
                    key: vec![k; 32],
                },
                vec![k; 64],
            )),
            one_time: (1..=3)
                .map(|j| StoredPrekey {
                    id: j,
                    key: vec![k ^ j as u8; 32],
                })
                .collect(),
            ..PrekeyUpload::default()
        };
        let caps = PrekeyCaps {
            one_time: 100,
            kem_one_time: 100,
        };
        one.upload_prekeys(u, upload, caps).await.unwrap();
    }
    for (i, u) in users.iter().enumerate() {
        // A shared message to the next two users, and one to the next alone.
        let mut to = vec![next(i), users[(i + 2) % users.len()].clone()];
        to.sort();
        one.enqueue(u, to, vec![i as u8, 1], vec![i as u8; 40], 1500, LIMITS)
            .await
            .unwrap();
        one.enqueue(
            u,
            vec![next(i)],
            vec![i as u8, 2],
            vec![i as u8; 30],
            1500,
            LIMITS,
        )
        .await
        .unwrap();
        one.touch(&u.user, 1000 + i as u64).await.unwrap();
        one.grant_presence(&u.user, vec![next(i).user], 99_999)
            .await
            .unwrap();
    }
    // Every other user acknowledges its first envelope: receipts for their senders.
    for u in users.iter().step_by(2) {
        let first = one.pending(u, 0, 1, 2000).await.unwrap()[0].envelope_id;
        one.ack(u, vec![first], 1800, RECEIPTS).await.unwrap();
    }
    let mut before = Vec::new();
    for (i, u) in users.iter().enumerate() {
        before.push(state_of(&one, u, &next(i)).await);
    }
    drop(one);
    // The second server cannot simply join: its share of the users' rows is not there.
    let joined = ShardedPgStore::connect(&[PG_URL, &second.url()], Some(&db.schema), 4).await;
    assert!(joined.is_err());

    let moved = ShardedPgStore::add_shard(&[PG_URL], &second.url(), Some(&db.schema))
        .await
        .unwrap();
    assert_eq!(moved.devices as usize, n_moving);
    assert!(moved.envelopes > 0 && moved.messages > 0 && moved.other_rows > 0);

    let two = sharded(&db, &second).await;
    for (i, u) in users.iter().enumerate() {
        assert_eq!(state_of(&two, u, &next(i)).await, before[i], "{u:?}");
    }
    let (s0, s1) = (sql(PG_URL).await, sql(&second.url()).await);
    for (c, on_second) in [(&s0, false), (&s1, true)] {
        let rows = c
            .query(&format!("SELECT user_id FROM {}.devices", db.schema), &[])
            .await
            .unwrap();
        let mut here: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        here.sort();
        let mut expected: Vec<String> = users
            .iter()
            .filter(|u| moving(u) == on_second)
            .map(|u| u.user.clone())
            .collect();
        expected.sort();
        assert_eq!(here, expected);
    }
    // New mail for a moved user comes after its old mail.
    let (mi, mover) = users.iter().enumerate().find(|(_, u)| moving(u)).unwrap();
    let old_ids: Vec<u64> = two
        .pending(mover, 0, 1000, 2000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.envelope_id)
        .collect();
    two.enqueue(
        &next(mi),
        vec![mover.clone()],
        b"new".to_vec(),
        b"x".to_vec(),
        2500,
        LIMITS,
    )
    .await
    .unwrap();
    let all = two.pending(mover, 0, 1000, 2000).await.unwrap();
    assert_eq!(all.last().unwrap().message_id, b"new");
    assert!(
        old_ids
            .iter()
            .all(|&id| id < all.last().unwrap().envelope_id)
    );
    // Everything acknowledged: no shared message left behind on either server.
    for u in &users {
        let ids: Vec<u64> = two
            .pending(u, 0, 1000, 2000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.envelope_id)
            .collect();
        two.ack(u, ids, 3000, RECEIPTS).await.unwrap();
    }
    for c in [&s0, &s1] {
        let left: i64 = c
            .query_one(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM {0}.messages) + (SELECT COUNT(*) FROM {0}.mailbox)
                     + (SELECT COALESCE(SUM(count), 0) FROM {0}.mailbox_usage)::BIGINT",
                    db.schema
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
    drop(two);
    // Done already: nothing more moves.
    let again = ShardedPgStore::add_shard(&[PG_URL], &second.url(), Some(&db.schema))
        .await
        .unwrap();
    assert_eq!(again, hush_relay::pg::Moved::default());
    // The old list (shard 0 alone) is refused now, and so are shards out of order.
    assert!(
        ShardedPgStore::connect(&[PG_URL], Some(&db.schema), 4)
            .await
            .is_err()
    );
    assert!(
        ShardedPgStore::connect(&[&second.url(), PG_URL], Some(&db.schema), 4)
            .await
            .is_err()
    );
    PgStore::drop_schema(PG_URL, &db.schema).await.unwrap();
}
