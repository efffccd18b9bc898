//! Several `hush relay` processes sharing one PostgreSQL (127.0.0.1:5432, database `test`,
//! a schema per test) with NATS wake-ups: cross-node delivery, receipts and presence,
//! exactly-once prekeys under concurrent fetches through different nodes, a node killed
//! with -9 under load, and NATS restarted during traffic. The last two run sharded: users'
//! state in two databases (`test` and `postgres`), Alice on shard 0 and Bob on shard 1, so
//! every message and receipt crosses shards. Loopback only; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hush_client::{Event, ReceiptKind};
use hush_crypto::{IdentityKeyPair, X25519KeyPair};
use hush_relay_protocol::proto::{self as pr, client_frame::Body as In, server_frame::Body as Out};
use hush_relay_protocol::signed;
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message as Ws;

const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
/// The second shard of the sharded tests: another database on the same server.
const PG_SHARD: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
const NATS: &str = "nats://127.0.0.1:4222";

/// A deployment: schema and NATS prefix unique to the test.
struct Cluster {
    dir: std::path::PathBuf,
    schema: String,
    prefix: String,
    nats: String,
    poll_ms: u64,
    sharded: bool,
}

impl Cluster {
    async fn new(name: &str, nats: &str, poll_ms: u64) -> Self {
        let schema = format!("hush_cluster_{}_{name}", std::process::id());
        hush_relay::PgStore::drop_schema(PG, &schema).await.unwrap();
        Self {
            dir: scratch(&format!("cluster-{name}")),
            prefix: format!("hushtest{}{name}", std::process::id()),
            schema,
            nats: nats.to_string(),
            poll_ms,
            sharded: false,
        }
    }

    /// The same, over two shards (`--pg-shard`): Alice's state on shard 0, Bob's on 1.
    async fn sharded(name: &str, nats: &str, poll_ms: u64) -> Self {
        let c = Self::new(name, nats, poll_ms).await;
        hush_relay::PgStore::drop_schema(PG_SHARD, &c.schema)
            .await
            .unwrap();
        assert_eq!(
            (
                hush_relay::pg::shard_of("alice", 2),
                hush_relay::pg::shard_of("bob", 2)
            ),
            (0, 1)
        );
        Self { sharded: true, ..c }
    }

    fn node(&self, listen: &str) -> (Proc, String) {
        let poll = self.poll_ms.to_string();
        relay(
            &self.dir,
            listen,
            &[
                "--postgres",
                PG,
                "--pg-schema",
                &self.schema,
                "--nats",
                &self.nats,
                "--nats-prefix",
                &self.prefix,
                "--poll-ms",
                &poll,
            ]
            .into_iter()
            .chain(if self.sharded {
                vec!["--pg-shard", PG_SHARD]
            } else {
                vec![]
            })
            .collect::<Vec<_>>(),
        )
    }
}

/// A value of a node's Prometheus metric.
async fn metric(addr: &str, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A load balancer: one loopback address in front of the nodes, round robin, skipping
/// nodes that refuse connections.
async fn balancer(backends: Arc<Mutex<Vec<String>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                break;
            };
            let list = backends.lock().unwrap().clone();
            let mut upstream = None;
            for i in 0..list.len() {
                let b = &list[(next + i) % list.len()];
                if let Ok(s) = tokio::net::TcpStream::connect(b).await {
                    next = (next + i + 1) % list.len();
                    upstream = Some(s);
                    break;
                }
            }
            let Some(mut upstream) = upstream else {
                continue;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
            });
        }
    });
    addr
}

/// A device driven by hand over the relay protocol.
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Raw {
    async fn connect(addr: &str, user: &str, id: &IdentityKeyPair) -> Self {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
            .await
            .unwrap();
        let Some(Ok(Ws::Binary(b))) = ws.next().await else {
            panic!("no challenge")
        };
        let Some(Out::Challenge(ch)) = pr::ServerFrame::decode(&b[..]).unwrap().body else {
            panic!("no challenge")
        };
        let key = id.public().to_bytes().to_vec();
        let sig = id.sign(&signed::auth_message(
            &ch.relay_id,
            &ch.nonce,
            user,
            1,
            &key,
        ));
        let mut raw = Self { ws, next: 1 };
        let out = raw
            .call(In::Authenticate(pr::Authenticate {
                address: Some(pr::Address {
                    user_id: user.into(),
                    device_id: 1,
                }),
                identity_key: key,
                signature: sig.to_bytes().to_vec(),
                ..Default::default()
            }))
            .await;
        assert!(matches!(out, Out::Authenticated(_)), "{out:?}");
        raw
    }

    async fn call(&mut self, body: In) -> Out {
        let id = self.next;
        self.next += 1;
        let f = pr::ClientFrame {
            request_id: id,
            body: Some(body),
        };
        self.ws
            .send(Ws::Binary(f.encode_to_vec().into()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Ws::Binary(b))) = self.ws.next().await else {
                panic!("closed")
            };
            let f = pr::ServerFrame::decode(&b[..]).unwrap();
            if f.request_id == id {
                return f.body.unwrap();
            }
        }
    }
}

fn client(dir: &Path, addr: &str, user: &str, key: u8) -> Dev {
    open(dir, addr, user, 1, [key; 32], |c| {
        c.reconnect_max = Duration::from_secs(1);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_delivery_receipts_presence_and_exactly_once_prekeys() {
    // Polling effectively off: delivery across nodes must come from NATS wake-ups.
    let c = Cluster::new("cross", NATS, 600_000).await;
    let (_n1, a1) = c.node("127.0.0.1:0");
    let (_n2, a2) = c.node("127.0.0.1:0");
    let (_n3, a3) = c.node("127.0.0.1:0");
    let mut alice = client(&c.dir, &a1, "alice", 1);
    let mut bob = client(&c.dir, &a2, "bob", 2);
    let carol = client(&c.dir, &a3, "carol", 3);
    for d in [&alice, &bob, &carol] {
        d.online().await;
    }
    let id = alice.client.send_text("bob", "across nodes").unwrap();
    let m = bob.message().await;
    assert_eq!(text(&m), "across nodes");
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
    assert!(
        metric(&a2, "hush_cluster_signals_in_total").await > 0,
        "bob's node was woken over NATS"
    );
    // Bob answers; Alice on another node gets it.
    bob.client.send_text("alice", "and back").unwrap();
    assert_eq!(text(&alice.message().await), "and back");
    // Presence, asked on another node than Bob's: Alice, whom Bob wrote to, sees him;
    // Carol, on a third node, whom he never wrote to, does not.
    let p = alice.client.presence("bob").await.unwrap();
    assert!(p.online && p.last_seen_ms.is_some());
    let p = carol.client.presence("bob").await.unwrap();
    assert!(!p.online && p.last_seen_ms.is_none());

    // An attachment through a balancer: Erin's WebSocket lands on one node and her upload
    // on the next, which accepts the token the first issued (tokens are in PostgreSQL; the
    // nodes share a blob directory). Bob downloads through his own node.
    let lb = balancer(Arc::new(Mutex::new(vec![
        a1.clone(),
        a2.clone(),
        a3.clone(),
    ])))
    .await;
    let erin = client(&c.dir, &lb, "erin", 5);
    erin.online().await;
    let file = c.dir.join("photo.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    erin.client
        .send_file(
            hush_client::Conversation::Direct("bob".into()),
            &file,
            "image/png",
            |_| {},
        )
        .await
        .unwrap();
    let m = bob.message().await;
    let hush_client::Body::Attachment(a) = &m.body else {
        panic!("expected an attachment")
    };
    let out = c.dir.join("photo-bob.bin");
    bob.client.download(a, &out, |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // Dave uploads 60 one-time prekeys and 60 one-time KEM prekeys beside a post-quantum
    // signed prekey and a last-resort KEM prekey; 6 fetchers, 2 per node, fetch 12 times
    // each, all at once: each one-time key goes out exactly once, then bundles come without
    // a one-time prekey and with the last-resort KEM prekey.
    let dave = IdentityKeyPair::generate(&mut rand::rng());
    let mut d = Raw::connect(&a1, "dave", &dave).await;
    let spk = X25519KeyPair::generate(&mut rand::rng());
    let kem = |id: u32| {
        let k = hush_sessions::KemPrekey::generate_one_time(id, &dave, &mut rand::rng());
        pr::KemPrekey {
            id,
            key: k.public_key().as_bytes().to_vec(),
            signature: k.signature().to_bytes().to_vec(),
        }
    };
    let out = d
        .call(In::UploadPrekeys(pr::UploadPrekeys {
            signed_prekey_id: 1,
            signed_prekey: spk.public().to_bytes().to_vec(),
            signed_prekey_signature: dave
                .sign(&signed::pq_signed_prekey_message(
                    1,
                    spk.public().as_bytes(),
                ))
                .to_bytes()
                .to_vec(),
            one_time_prekeys: (0..60)
                .map(|i| pr::OneTimePrekey {
                    id: 1000 + i,
                    key: X25519KeyPair::generate(&mut rand::rng())
                        .public()
                        .to_bytes()
                        .to_vec(),
                })
                .collect(),
            kem_prekeys: (0..60).map(|i| kem(2000 + i)).collect(),
            last_resort_kem_prekey: Some(kem(7)),
        }))
        .await;
    assert!(matches!(
        out,
        Out::PrekeyStatus(pr::PrekeyStatus {
            one_time_prekeys: 60,
            kem_prekeys: 60,
            last_resort_kem_prekey: true,
            ..
        })
    ));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let addr = [&a1, &a2, &a3][i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let id = IdentityKeyPair::generate(&mut rand::rng());
            let mut f = Raw::connect(&addr, &format!("fetcher{i}"), &id).await;
            let mut got = Vec::new();
            for _ in 0..12 {
                match f
                    .call(In::FetchBundle(pr::FetchBundle {
                        address: Some(pr::Address {
                            user_id: "dave".into(),
                            device_id: 1,
                        }),
                    }))
                    .await
                {
                    Out::Bundle(b) => {
                        got.push((b.one_time_prekey.map(|k| k.id), b.kem_prekey.map(|k| k.id)))
                    }
                    Out::Error(e) if e.code == pr::ErrorCode::RateLimited as i32 => {
                        tokio::time::sleep(Duration::from_millis(e.retry_after_ms)).await;
                    }
                    other => panic!("{other:?}"),
                }
            }
            got
        }));
    }
    let mut ids = Vec::new();
    let mut kem_ids = Vec::new();
    let mut empty = 0;
    for t in tasks {
        for (k, q) in t.await.unwrap() {
            match k {
                Some(id) => ids.push(id),
                None => empty += 1,
            }
            // Every bundle carries a KEM prekey: a one-time one, or the last-resort one (7)
            // once none is left (or while the next is held by a concurrent fetch: one-time
            // prekeys and one-time KEM prekeys are taken independently).
            match q {
                Some(7) => {}
                Some(id) => kem_ids.push(id),
                None => panic!("a bundle without a KEM prekey"),
            }
        }
    }
    let unique: BTreeSet<u32> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a one-time prekey was handed out twice"
    );
    assert_eq!(unique, (1000..1060).collect::<BTreeSet<u32>>());
    let unique: BTreeSet<u32> = kem_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        kem_ids.len(),
        "a one-time KEM prekey was handed out twice"
    );
    assert_eq!(unique, (2000..2060).collect::<BTreeSet<u32>>());
    assert!(empty > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_and_duplicates_nothing() {
    let c = Cluster::sharded("kill", NATS, 1000).await;
    let (n1, a1) = c.node("127.0.0.1:0");
    let (_n2, a2) = c.node("127.0.0.1:0");
    let (_n3, a3) = c.node("127.0.0.1:0");
    // Alice goes through the balancer (node 1 first, then node 2); Bob sits on node 3.
    let lb = balancer(Arc::new(Mutex::new(vec![a1.clone(), a2.clone()]))).await;
    let mut alice = client(&c.dir, &lb, "alice", 1);
    let mut bob = client(&c.dir, &a3, "bob", 2);
    bob.online().await;
    alice.online().await;
    const N: usize = 150;
    let mut sent_ids = BTreeSet::new();
    for i in 0..N {
        sent_ids.insert(
            alice
                .client
                .send_text("bob", &format!("message {i}"))
                .unwrap(),
        );
    }
    // Once some have arrived, node 1 (Alice's) dies mid-stream.
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(bob.message().await);
    }
    let queued_at_kill = alice.client.outbox_len().unwrap();
    n1.kill();
    eprintln!("node 1 killed with {queued_at_kill} messages still in Alice's outbox");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < N && tokio::time::Instant::now() < deadline {
        got.push(bob.message().await);
    }
    got.extend(bob.drain_messages(Duration::from_secs(2)).await);
    let ids: Vec<_> = got.iter().map(|m| m.id).collect();
    let unique: BTreeSet<_> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a message reached the application twice"
    );
    assert_eq!(unique, sent_ids, "every message arrives");
    // Every message Alice saw acknowledged ("sent") is among them.
    let mut acked = BTreeSet::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(500), alice.events.recv()).await
    {
        if let Event::Receipt {
            message_id,
            kind: ReceiptKind::Sent,
            ..
        } = e
        {
            acked.insert(message_id);
        }
    }
    assert!(acked.is_subset(&unique));
    assert_eq!(alice.client.outbox_len().unwrap(), 0);
}

/// A NATS server of the test's own, so it can be stopped and started.
fn nats_server(port: u16) -> Proc {
    let mut cmd = std::process::Command::new("/usr/sbin/nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    Proc::spawn(cmd)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_during_traffic_delays_but_loses_nothing() {
    let port = free_port();
    let nats = nats_server(port);
    wait_port(port).await;
    let c = Cluster::sharded("natsrestart", &format!("nats://127.0.0.1:{port}"), 500).await;
    let (_n1, a1) = c.node("127.0.0.1:0");
    let (_n2, a2) = c.node("127.0.0.1:0");
    let alice = client(&c.dir, &a1, "alice", 1);
    let mut bob = client(&c.dir, &a2, "bob", 2);
    alice.online().await;
    bob.online().await;
    let mut got = Vec::new();
    for i in 0..10 {
        alice
            .client
            .send_text("bob", &format!("before {i}"))
            .unwrap();
    }
    while got.len() < 10 {
        got.push(bob.message().await);
    }
    // NATS goes away while traffic continues: polling carries it.
    nats.kill();
    for i in 0..20 {
        alice
            .client
            .send_text("bob", &format!("during {i}"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    while got.len() < 30 {
        got.push(bob.message().await);
    }
    // NATS comes back on the same port; the nodes reconnect and resubscribe.
    let _nats = nats_server(port);
    wait_port(port).await;
    let before = metric(&a2, "hush_cluster_signals_in_total").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        alice
            .client
            .send_text("bob", &format!("after {i}"))
            .unwrap();
        i += 1;
        got.push(bob.message().await);
        if metric(&a2, "hush_cluster_signals_in_total").await > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 2 never heard from NATS again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got.extend(bob.drain_messages(Duration::from_secs(2)).await);
    let texts: Vec<String> = got.iter().map(|m| text(m).to_string()).collect();
    let unique: BTreeSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len(), "duplicates: {texts:?}");
    assert_eq!(texts.len(), 30 + i, "everything sent arrived");
}
