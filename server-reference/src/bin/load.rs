//! `hush-relay-load`: a load generator for the relay, on loopback.
//!
//! ```text
//! hush-relay-load throughput --relay 127.0.0.1:7800 --pairs 64 --window 64 --seconds 20
//! hush-relay-load connections --relay 127.0.0.1:7800 --count 9000 --relay-pid PID --hold 10
//! ```
//!
//! `throughput`: each pair is a sender and a receiver; senders keep `window` sends in flight,
//! receivers acknowledge in batches. An envelope counts when its receiver acknowledged it
//! (send, durable store, deliver, acknowledge). Latency is from send to receipt, measured
//! with a timestamp inside the 100-byte payload. `connections`: opens idle authenticated
//! connections and reports the relay's resident memory per connection (from /proc).
//! Every run stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hush_crypto::IdentityKeyPair;
use hush_relay_protocol::proto::{self, client_frame::Body as In, server_frame::Body as Out};
use hush_relay_protocol::signed;
use prost::Message as _;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// The same allocator as the relay's (in A/B runs it made no measurable difference to the
/// load generator's own CPU time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Load generator for hush-relay (loopback only)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Envelopes relayed end to end per second, with latency percentiles.
    Throughput {
        /// Relay nodes, comma-separated. With several, each pair's sender and receiver
        /// connect to different nodes, so every envelope crosses nodes.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7800")]
        relay: Vec<std::net::SocketAddr>,
        #[arg(long, default_value_t = 64)]
        pairs: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The relay's process id, to report its memory.
        #[arg(long)]
        relay_pid: Option<u32>,
    },
    /// Idle authenticated connections held open.
    Connections {
        #[arg(long, default_value = "127.0.0.1:7800")]
        relay: std::net::SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long)]
        relay_pid: Option<u32>,
        /// Seconds to hold the connections once all are open.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Prefix for user ids, so several processes can run side by side.
        #[arg(long, default_value = "idle")]
        prefix: String,
    },
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ensure_loopback(addr: &std::net::SocketAddr) {
    if !addr.ip().is_loopback() {
        eprintln!("hush-relay-load only targets loopback addresses");
        std::process::exit(2);
    }
}

async fn connect(relay: std::net::SocketAddr, user: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{relay}/v1/ws"))
        .await
        .map_err(|e| e.to_string())?;
    let Some(Ok(Message::Binary(b))) = ws.next().await else {
        return Err("no challenge".into());
    };
    let Ok(proto::ServerFrame {
        body: Some(Out::Challenge(ch)),
        ..
    }) = proto::ServerFrame::decode(&b[..])
    else {
        return Err("not a challenge".into());
    };
    let id = IdentityKeyPair::generate(&mut rand::rng());
    let key = id.public().to_bytes().to_vec();
    let sig = id.sign(&signed::auth_message(
        &ch.relay_id,
        &ch.nonce,
        user,
        1,
        &key,
    ));
    let auth = proto::ClientFrame {
        request_id: 1,
        body: Some(In::Authenticate(proto::Authenticate {
            address: Some(proto::Address {
                user_id: user.into(),
                device_id: 1,
            }),
            identity_key: key,
            signature: sig.to_bytes().to_vec(),
            ..Default::default()
        })),
    };
    ws.send(Message::Binary(auth.encode_to_vec().into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            return Err("closed during auth".into());
        };
        match proto::ServerFrame::decode(&b[..])
            .map_err(|e| e.to_string())?
            .body
        {
            Some(Out::Authenticated(_)) => return Ok(ws),
            Some(Out::Error(e)) => return Err(e.message),
            _ => continue,
        }
    }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn throughput(
    relays: &[std::net::SocketAddr],
    pairs: usize,
    window: usize,
    seconds: u64,
    pid: Option<u32>,
) {
    let run = format!("{:x}", rand::random::<u32>());
    // Every pair connects first; the clock starts when all are ready.
    let mut connected = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let receiver_user = format!("rx-{run}-{p}");
        let (rx_node, tx_node) = (relays[p % relays.len()], relays[(p + 1) % relays.len()]);
        match (
            connect(rx_node, &receiver_user).await,
            connect(tx_node, &format!("tx-{run}-{p}")).await,
        ) {
            (Ok(rx), Ok(tx)) => connected.push((receiver_user, rx, tx)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("hush-relay-load: cannot connect pair {p}: {e}");
                std::process::exit(1);
            }
        }
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let acked = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = vec![];
    for (receiver_user, mut rx, mut tx) in connected {
        let acked = acked.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut pending = Vec::new();
            let mut last_ack = Instant::now();
            while Instant::now() < deadline {
                let Ok(Some(Ok(Message::Binary(b)))) =
                    tokio::time::timeout(Duration::from_millis(200), rx.next()).await
                else {
                    continue;
                };
                if let Ok(proto::ServerFrame {
                    body: Some(Out::Envelope(e)),
                    ..
                }) = proto::ServerFrame::decode(&b[..])
                {
                    if let Some(ts) = e
                        .ciphertext
                        .get(..8)
                        .and_then(|s| s.try_into().ok())
                        .map(u64::from_le_bytes)
                    {
                        lat.push((start.elapsed().as_micros() as u64).saturating_sub(ts));
                    }
                    pending.push(e.envelope_id);
                }
                if pending.len() >= 32
                    || (!pending.is_empty() && last_ack.elapsed() > Duration::from_millis(5))
                {
                    let n = pending.len() as u64;
                    let ack = proto::ClientFrame {
                        request_id: 0,
                        body: Some(In::Ack(proto::Ack {
                            envelope_ids: std::mem::take(&mut pending),
                        })),
                    };
                    if rx
                        .send(Message::Binary(ack.encode_to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    acked.fetch_add(n, Ordering::Relaxed);
                    last_ack = Instant::now();
                }
            }
            latencies.lock().await.extend(lat);
        }));
        tasks.push(tokio::spawn(async move {
            let mut in_flight = 0usize;
            let mut n = 0u64;
            let mut payload = vec![0x42u8; 100];
            while Instant::now() < deadline {
                while in_flight < window {
                    n += 1;
                    payload[..8]
                        .copy_from_slice(&(start.elapsed().as_micros() as u64).to_le_bytes());
                    let send = proto::ClientFrame {
                        request_id: n,
                        body: Some(In::Send(proto::Send {
                            recipients: vec![proto::Address {
                                user_id: receiver_user.clone(),
                                device_id: 1,
                            }],
                            message_id: n.to_be_bytes().to_vec(),
                            ciphertext: payload.clone(),
                            device_lists: vec![],
                            // As clients send with every text (SPEC §17): the relay
                            // stores it and tags each delivery.
                            franking_commitment: vec![0x33; 32],
                        })),
                    };
                    if tx
                        .feed(Message::Binary(send.encode_to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    in_flight += 1;
                }
                // The window's new sends leave in one write.
                if tx.flush().await.is_err() {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(200), tx.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        if let Ok(proto::ServerFrame {
                            body: Some(Out::Sent(_) | Out::Error(_)),
                            ..
                        }) = proto::ServerFrame::decode(&b[..])
                        {
                            in_flight -= 1;
                        }
                    }
                    Ok(None) | Ok(Some(Err(_))) => return,
                    _ => {}
                }
            }
        }));
    }
    let progress = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut last = 0;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = acked.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>4.0}s  {:>8} envelopes/s  ({} total)",
                    start.elapsed().as_secs_f64(),
                    now - last,
                    now
                );
                last = now;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let elapsed = start.elapsed().as_secs_f64().min(seconds as f64);
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let total = acked.load(Ordering::Relaxed);
    println!(
        "pairs {pairs}, window {window}, {seconds} s, {} relay node(s)",
        relays.len()
    );
    println!(
        "envelopes relayed end to end: {total} ({:.0}/s)",
        total as f64 / elapsed
    );
    println!(
        "latency send->receive: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({} samples)",
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        percentile(&lat, 0.999) as f64 / 1000.0,
        lat.len()
    );
    if let Some(kib) = rss_kib(pid) {
        println!("relay resident memory: {} MiB", kib / 1024);
    }
}

async fn connections(
    relay: std::net::SocketAddr,
    count: usize,
    pid: Option<u32>,
    hold: u64,
    prefix: &str,
) {
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(count);
    let start = Instant::now();
    let mut failures = 0;
    for i in 0..count {
        match connect(relay, &format!("{prefix}-{i}")).await {
            Ok(ws) => held.push(ws),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("connection {i}: {e}");
                }
            }
        }
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "  {} connections open ({:.1} s)",
                held.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    println!(
        "{} idle authenticated connections open, {failures} failed, in {:.1} s",
        held.len(),
        start.elapsed().as_secs_f64()
    );
    if let (Some(b), Some(a)) = (before, after) {
        let per = (a.saturating_sub(b) as f64 * 1024.0) / held.len().max(1) as f64;
        println!(
            "relay resident memory: {} MiB -> {} MiB, {:.0} bytes per connection",
            b / 1024,
            a / 1024,
            per
        );
    }
    tokio::time::sleep(Duration::from_secs(hold)).await;
}

#[tokio::main]
async fn main() {
    match Args::parse().command {
        Command::Throughput {
            relay,
            pairs,
            window,
            seconds,
            relay_pid,
        } => {
            relay.iter().for_each(ensure_loopback);
            throughput(&relay, pairs, window, seconds, relay_pid).await;
        }
        Command::Connections {
            relay,
            count,
            relay_pid,
            hold,
            prefix,
        } => {
            ensure_loopback(&relay);
            connections(relay, count, relay_pid, hold, &prefix).await;
        }
    }
}
