//! The PostgreSQL store's batches (issue 19), with two stores on one database as two relay
//! nodes: many concurrent sends (one and several recipients) and acknowledgements through
//! both, then every invariant checked against the tables themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_macros)]
#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::*;
use hush_relay::Store;
use hush_relay::store::{Addr, Delivery, MailboxLimits, Outgoing, ReceiptLimits, StoreError};

fn a(user: &str) -> Addr {
    Addr {
        user: user.into(),
        device: 1,
    }
}

/// What each send stored: (sender, envelope number) → the recipients it was stored for.
type Outcomes = HashMap<(usize, u32), Vec<Addr>>;
/// What each recipient read: (envelope id, message id, sender), in order.
type Received = HashMap<Addr, Vec<(u64, Vec<u8>, Addr)>>;

const SENDERS: usize = 4;
const RECIPIENTS: usize = 3;
const ROUNDS: u32 = 60;

/// What a node's delivery hook saw: (recipient, envelope id, after) and (owner, receipt id,
/// after).
#[derive(Default)]
struct Seen {
    envelopes: Vec<(Addr, u64, u64)>,
    receipts: Vec<(Addr, u64, u64)>,
}

async fn node(schema: &str, seen: Arc<Mutex<Seen>>) -> hush_relay::PgStore {
    let store = hush_relay::PgStore::connect(PG_URL, Some(schema), 4)
        .await
        .unwrap();
    assert!(store.deliver_on_commit(Arc::new(move |batch| {
        let mut s = seen.lock().unwrap();
        for d in batch {
            match d {
                Delivery::Envelope {
                    to,
                    envelope_id,
                    after,
                    ..
                } => s.envelopes.push((to, envelope_id, after)),
                Delivery::Receipt { to, receipt, after } => {
                    s.receipts.push((to, receipt.receipt_id, after))
                }
            }
        }
    })));
    store
}

/// Two nodes, four senders sending 60 rounds each (every third one to all three recipients,
/// the rest to one), recipients reading and acknowledging through either node at the same
/// time, and senders acknowledging some of their receipts through the other node, under caps
/// tight enough that some sends are refused. Then:
/// - every envelope a send stored arrives exactly once, and from each sender in the order
///   sent; nothing refused arrives;
/// - the ids each node's hook pushed for a recipient chain (`after` is the id committed just
///   before, whichever node committed it), and likewise for receipts;
/// - the kept counts (mailbox usage, each sender's share, receipt queues) equal counts of the
///   rows; with everything acknowledged, no message is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_batch_exactly_once_in_order() {
    let db = Backend::Postgres.db("pg-batch-two-nodes").await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let n1 = node(&db.schema, seen.clone()).await;
    let n2 = node(&db.schema, seen.clone()).await;
    let limits = MailboxLimits {
        max_count: 200,
        max_bytes: 1 << 20,
        sender_max_count: 40,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    let receipts = ReceiptLimits {
        max_queued: 50,
        ttl_ms: 1 << 40,
    };
    let senders: Vec<Addr> = (0..SENDERS).map(|i| a(&format!("s{i}"))).collect();
    let recipients: Vec<Addr> = (0..RECIPIENTS).map(|i| a(&format!("r{i}"))).collect();
    for x in senders.iter().chain(&recipients) {
        assert!(n1.register(x, &[7; 32], 1, 16).await.unwrap());
    }
    let stored: Arc<Mutex<Outcomes>> = Arc::default();
    let receipts_acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (si, s) in senders.iter().enumerate() {
        let (n1, n2, s, stored) = (n1.clone(), n2.clone(), s.clone(), stored.clone());
        let receipts_acked = receipts_acked.clone();
        let recipients = recipients.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let to = if round % 3 == 0 {
                    recipients.clone()
                } else {
                    vec![recipients[(round as usize + si) % RECIPIENTS].clone()]
                };
                // Two envelopes per call, as a connection's pipelined sends are.
                let batch = vec![
                    Outgoing {
                        recipients: to.clone(),
                        message_id: mid(si, round * 2),
                        ciphertext: vec![si as u8; 64],
                        franking_commitment: None,
                    },
                    Outgoing {
                        recipients: to.clone(),
                        message_id: mid(si, round * 2 + 1),
                        ciphertext: vec![si as u8; 64],
                        franking_commitment: Some([9; 32]),
                    },
                ];
                let node = if round % 2 == 0 { &n1 } else { &n2 };
                let results = node.enqueue_many(&s, batch, 1000, limits).await;
                for (k, r) in results.into_iter().enumerate() {
                    let kept = match r {
                        Ok(refused) => {
                            let refused: Vec<Addr> = refused
                                .into_iter()
                                .map(|e| match e {
                                    StoreError::MailboxFull(x) | StoreError::SenderShareFull(x) => {
                                        x
                                    }
                                    other => panic!("unexpected refusal {other:?}"),
                                })
                                .collect();
                            to.iter()
                                .filter(|x| !refused.contains(x))
                                .cloned()
                                .collect()
                        }
                        Err(StoreError::MailboxFull(_) | StoreError::SenderShareFull(_)) => vec![],
                        Err(e) => panic!("send failed: {e:?}"),
                    };
                    stored
                        .lock()
                        .unwrap()
                        .insert((si, round * 2 + k as u32), kept);
                }
                // Some of its receipts acknowledged through the other node, while the
                // recipients' acknowledgements queue more.
                if round % 5 == 4 {
                    let other = if round % 2 == 0 { &n2 } else { &n1 };
                    let ids: Vec<u64> = other
                        .receipts(&s, 0, 16)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.receipt_id)
                        .collect();
                    receipts_acked.fetch_add(ids.len(), std::sync::atomic::Ordering::SeqCst);
                    other.ack_receipts(&s, ids).await.unwrap();
                }
                if round % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Recipients read and acknowledge while the sends go on, through alternating nodes.
    let received: Arc<Mutex<Received>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for (ri, r) in recipients.iter().enumerate() {
        let (n1, n2, r, received, done) = (
            n1.clone(),
            n2.clone(),
            r.clone(),
            received.clone(),
            done.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut cursor = 0;
            let mut turn = ri;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                turn += 1;
                let node = if turn % 2 == 0 { &n1 } else { &n2 };
                let page = node.pending(&r, cursor, 64, 1000).await.unwrap();
                if page.is_empty() && finished {
                    return;
                }
                let ids: Vec<u64> = page.iter().map(|e| e.envelope_id).collect();
                if let Some(&last) = ids.last() {
                    cursor = last;
                }
                received
                    .lock()
                    .unwrap()
                    .entry(r.clone())
                    .or_default()
                    .extend(
                        page.into_iter()
                            .map(|e| (e.envelope_id, e.message_id, e.sender)),
                    );
                if !ids.is_empty() {
                    node.ack(&r, ids, 1000, receipts).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in readers {
        t.await.unwrap();
    }

    // Exactly once, in order, nothing refused.
    let stored = std::mem::take(&mut *stored.lock().unwrap());
    let received = std::mem::take(&mut *received.lock().unwrap());
    let mut refusals = 0;
    for r in &recipients {
        let got = received.get(r).cloned().unwrap_or_default();
        let ids: HashSet<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids.len(), got.len(), "an envelope arrived twice at {r:?}");
        let mut by_sender: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (_, m, s) in &got {
            by_sender.entry(s.user.clone()).or_default().push(m.clone());
        }
        for (si, s) in senders.iter().enumerate() {
            let expected: Vec<Vec<u8>> = (0..ROUNDS * 2)
                .filter(|k| {
                    let kept = &stored[&(si, *k)];
                    if !kept.contains(r) {
                        refusals += 1;
                    }
                    kept.contains(r)
                })
                .map(|k| mid(si, k))
                .collect();
            assert_eq!(
                by_sender.remove(&s.user).unwrap_or_default(),
                expected,
                "{s:?} → {r:?}: not exactly the stored envelopes, in order"
            );
        }
    }
    assert!(
        refusals > 0,
        "the caps never refused: the test is too loose"
    );

    // The hooks' chains: each commit's `after` is the id committed before it.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (what, list) in [("envelope", &seen.envelopes), ("receipt", &seen.receipts)] {
        let mut by_owner: HashMap<&Addr, Vec<(u64, u64)>> = HashMap::new();
        for (to, id, after) in list {
            by_owner.entry(to).or_default().push((*id, *after));
        }
        assert!(!by_owner.is_empty());
        for (to, mut chain) in by_owner {
            chain.sort_unstable();
            let mut previous = 0;
            for (id, after) in chain {
                assert_eq!(
                    after, previous,
                    "{what} {id} for {to:?} follows {previous}, not {after}"
                );
                previous = id;
            }
        }
    }

    // Kept counts against the rows.
    let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let q = |sql: &str| sql.replace("S.", &format!("{}.", db.schema));
    let count = |sql: String| {
        let c = &client;
        async move { c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count(q("SELECT COUNT(*) FROM S.mailbox")).await, 0);
    assert_eq!(
        count(q("SELECT COUNT(*) FROM S.messages")).await,
        0,
        "a shared message outlived its last reference"
    );
    assert_eq!(
        count(q("SELECT COALESCE(SUM(count), 0)::BIGINT + COALESCE(SUM(bytes), 0)::BIGINT FROM S.mailbox_usage")).await,
        0
    );
    assert_eq!(count(q("SELECT COUNT(*) FROM S.mailbox_share")).await, 0);
    assert_eq!(
        count(q("SELECT COUNT(*) FROM S.receipt_queue q WHERE q.count <> (SELECT COUNT(*) FROM S.receipts r WHERE r.user_id = q.user_id AND r.device_id = q.device_id)")).await,
        0,
        "a receipt queue's count is not its rows'"
    );
    let queued = count(q("SELECT COUNT(*) FROM S.receipts")).await;
    assert!(queued <= (SENDERS as i64) * 50, "{queued} receipts queued");
    let acked = receipts_acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        queued > 0 && acked > 0,
        "{queued} receipts queued, {acked} acknowledged: the test did not exercise both"
    );
    hush_relay::PgStore::drop_schema(PG_URL, &db.schema)
        .await
        .unwrap();
}

fn mid(sender: usize, k: u32) -> Vec<u8> {
    let mut m = vec![sender as u8];
    m.extend_from_slice(&k.to_be_bytes());
    m
}

/// Expiry keeps the counts: expired envelopes (one recipient and shared) and receipts go,
/// and the usage, shares and receipt queues are what the remaining rows make.
#[tokio::test]
async fn expiry_keeps_the_counts() {
    let db = Backend::Postgres.db("pg-batch-expiry").await;
    let store = node(&db.schema, Arc::default()).await;
    for u in ["s0", "s1", "r0"] {
        assert!(store.register(&a(u), &[7; 32], 1, 16).await.unwrap());
    }
    let short = MailboxLimits {
        max_count: 100,
        max_bytes: 1 << 20,
        sender_max_count: 100,
        sender_max_bytes: 1 << 20,
        ttl_ms: 10,
    };
    let long = MailboxLimits {
        ttl_ms: 1 << 40,
        ..short
    };
    let receipts = ReceiptLimits {
        max_queued: 10,
        ttl_ms: 500,
    };
    let send = |from: &'static str, to: Vec<Addr>, m: u8, limits: MailboxLimits| {
        let store = store.clone();
        async move {
            store
                .enqueue(&a(from), to, vec![m], vec![m; 10], 1000, limits)
                .await
                .unwrap()
        }
    };
    send("s0", vec![a("r0")], 1, short).await;
    send("s1", vec![a("r0"), a("s0")], 2, short).await;
    send("s0", vec![a("r0")], 3, long).await;
    send("s0", vec![a("r0")], 4, long).await;
    // A "delivered" receipt for s0, queued at 1000.
    let first = store.pending(&a("r0"), 0, 10, 1000).await.unwrap();
    let four = first
        .iter()
        .find(|e| e.message_id == [4])
        .unwrap()
        .envelope_id;
    store
        .ack(&a("r0"), vec![four], 1000, receipts)
        .await
        .unwrap();
    assert_eq!(store.receipts(&a("s0"), 0, 10).await.unwrap().len(), 1);

    assert_eq!(store.expire(2000, receipts).await.unwrap(), 3);
    let left = store.pending(&a("r0"), 0, 10, 2000).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|e| e.message_id.clone())
            .collect::<Vec<_>>(),
        vec![vec![3]]
    );
    assert!(store.receipts(&a("s0"), 0, 10).await.unwrap().is_empty());

    let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = |sql: &str| {
        let sql = sql.replace("S.", &format!("{}.", db.schema));
        let c = &client;
        async move {
            c.query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, i64>(1),
                        r.get::<_, i64>(2),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        rows("SELECT user_id, count, bytes FROM S.mailbox_usage WHERE count <> 0 OR bytes <> 0 ORDER BY 1").await,
        vec![("r0".to_string(), 1, 10)]
    );
    assert_eq!(
        rows("SELECT user_id || '/' || sender_user, count, bytes FROM S.mailbox_share ORDER BY 1")
            .await,
        vec![("r0/s0".to_string(), 1, 10)]
    );
    assert_eq!(
        rows("SELECT user_id, count, last_id FROM S.receipt_queue WHERE count <> 0").await,
        vec![]
    );
    assert_eq!(rows("SELECT 'm', id, refs FROM S.messages").await, vec![]);
    hush_relay::PgStore::drop_schema(PG_URL, &db.schema)
        .await
        .unwrap();
}

/// A loopback TCP proxy the test controls, between the store and PostgreSQL: it can stall
/// (hold every byte, as a partition does) and cut every connection.
struct Proxy {
    port: u16,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

/// Copies `r` to `w` while the proxy's generation is `born`, holding bytes while stalled.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    born: u64,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            () = tokio::time::sleep(Duration::from_millis(50)) => 0,
        };
        while stalled.load(Ordering::SeqCst) && generation.load(Ordering::SeqCst) == born {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if generation.load(Ordering::SeqCst) != born {
            return;
        }
        if n > 0 && w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, g) = (stalled.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (s, g) = (s.clone(), g.clone());
                tokio::spawn(async move {
                    let born = g.load(Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect("127.0.0.1:5432").await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pump(cr, sw, s.clone(), g.clone(), born));
                    let b = tokio::spawn(pump(sr, cw, s, g, born));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Self {
            port,
            stalled,
            generation,
        }
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection open now.
    fn cut(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A partition between a node and PostgreSQL (a proxy that stalls, then cuts every
/// connection): sends during it fail with `Unavailable` within the batch timeout instead of
/// hanging; afterwards the store reconnects by itself; every send acknowledged before,
/// during or after arrives exactly once and in order, and one that failed arrives at most
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_fails_fast_and_heals() {
    let db = Backend::Postgres.db("pg-batch-partition").await;
    let proxy = Proxy::start().await;
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=test",
        proxy.port
    );
    let store = hush_relay::PgStore::connect(&url, Some(&db.schema), 4)
        .await
        .unwrap();
    for u in ["alice", "bob"] {
        assert!(store.register(&a(u), &[7; 32], 1, 16).await.unwrap());
    }
    let limits = MailboxLimits {
        max_count: 1000,
        max_bytes: 1 << 20,
        sender_max_count: 1000,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    let send = |m: u32| {
        let store = store.clone();
        async move {
            store
                .enqueue(
                    &a("alice"),
                    vec![a("bob")],
                    m.to_be_bytes().to_vec(),
                    vec![1; 16],
                    1000,
                    limits,
                )
                .await
        }
    };
    let mut acknowledged = Vec::new();
    for m in 0..20 {
        send(m).await.unwrap();
        acknowledged.push(m);
    }
    proxy.stall(true);
    let started = std::time::Instant::now();
    let failed = send(20).await;
    let took = started.elapsed();
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(
        took >= hush_relay::store::pg::BATCH_TIMEOUT
            && took < hush_relay::store::pg::BATCH_TIMEOUT + Duration::from_secs(5),
        "failed after {took:?}"
    );
    proxy.stall(false);
    proxy.cut();
    // Healed: the pool opens new connections (a send may still meet a cut one, and fail).
    let mut m = 21;
    let healed = std::time::Instant::now();
    while acknowledged.len() < 40 {
        assert!(healed.elapsed() < Duration::from_secs(20), "did not heal");
        if send(m).await.is_ok() {
            acknowledged.push(m);
        }
        m += 1;
    }
    let got: Vec<u32> = store
        .pending(&a("bob"), 0, 1000, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| u32::from_be_bytes(e.message_id.as_slice().try_into().unwrap()))
        .collect();
    let kept: Vec<u32> = got
        .iter()
        .copied()
        .filter(|x| acknowledged.contains(x))
        .collect();
    assert_eq!(
        kept, acknowledged,
        "acknowledged sends: exactly once, in order"
    );
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "a failed send arrived twice");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    hush_relay::PgStore::drop_schema(PG_URL, &db.schema)
        .await
        .unwrap();
}

/// One connection's burst of sends to made-up recipients (64 sends of 256 each: 16,384
/// mailboxes, beyond PostgreSQL's stock lock table of 6,400) is split into batches within
/// `MAX_BATCH_LOCKS`: every send is refused as unknown, none fails in the database, and the
/// store keeps serving.
#[tokio::test]
async fn made_up_recipients_cannot_exhaust_the_lock_table() {
    let db = Backend::Postgres.db("pg-batch-locks").await;
    let store = node(&db.schema, Arc::default()).await;
    for u in ["alice", "bob"] {
        assert!(store.register(&a(u), &[7; 32], 1, 16).await.unwrap());
    }
    let limits = MailboxLimits {
        max_count: 100,
        max_bytes: 1 << 20,
        sender_max_count: 100,
        sender_max_bytes: 1 << 20,
        ttl_ms: 1 << 40,
    };
    let burst: Vec<Outgoing> = (0..64)
        .map(|i| Outgoing {
            recipients: (0..256).map(|j| a(&format!("nobody-{i}-{j:03}"))).collect(),
            message_id: vec![i],
            ciphertext: vec![0; 16],
            franking_commitment: None,
        })
        .collect();
    let results = store.enqueue_many(&a("alice"), burst, 1000, limits).await;
    assert_eq!(results.len(), 64);
    for r in results {
        assert!(matches!(r, Err(StoreError::UnknownRecipient(_))), "{r:?}");
    }
    store
        .enqueue(
            &a("alice"),
            vec![a("bob")],
            vec![1],
            vec![1; 8],
            1000,
            limits,
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending(&a("bob"), 0, 10, 1000).await.unwrap().len(),
        1
    );
    hush_relay::PgStore::drop_schema(PG_URL, &db.schema)
        .await
        .unwrap();
}
