//! How fast one client sends and another receives through a relay, and what the two clients
//! cost in CPU per message (docs/BENCHMARKS.md, "Client").
//!
//! ```text
//! target/release/hush-relay --listen 127.0.0.1:7812 --db /tmp/bench-relay.db \
//!     --ip-rate 10000000 --device-rate 1000000 &
//! cargo run --release -p hush-client --example client-throughput -- ws://127.0.0.1:7812 500
//! cargo run --release -p hush-client --example client-throughput -- ws://127.0.0.1:7812 500 backlog
//! ```
//!
//! `live` (the default): Alice queues N texts to Bob at once; the run ends when Bob has shown
//! all of them and Alice has seen each one's "delivered" tick. `backlog`: Bob is offline
//! while Alice's N texts are stored at the relay; the clock starts when Bob connects and
//! stops when he has shown them all and Alice has every "delivered" tick. This process
//! holds only the two clients (the relay is another process), so its CPU time is the
//! clients' alone. Prints one line: messages per second, and client CPU µs per message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use hush_client::{Client, ClientConfig, Event, ReceiptKind};
use hush_crypto::StorageKey;

/// This process's user + system CPU time, from /proc/self/stat (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let relay = args.next().unwrap_or_else(|| "ws://127.0.0.1:7812".into());
    let n: usize = args.next().map_or(2000, |s| s.parse().unwrap());
    let backlog = args.next().is_some_and(|m| m == "backlog");
    let dir = std::env::temp_dir().join(format!("hush-client-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = std::process::id();
    let open = |user: &str, key: u8| {
        Client::open(ClientConfig::new(
            &relay,
            dir.join(format!("{user}.db")),
            StorageKey::from_bytes([key; 32]),
            user,
            1,
        ))
        .unwrap()
    };
    let alice_id = format!("alice{run}");
    let bob_id = format!("bob{run}");
    let (alice, mut alice_events) = open(&alice_id, 1);
    let (bob, mut bob_events) = open(&bob_id, 2);
    alice.start();
    bob.start();
    alice.wait_connected(Duration::from_secs(10)).await.unwrap();
    bob.wait_connected(Duration::from_secs(10)).await.unwrap();

    // Warm up: the session exists before the clock starts.
    alice.send_text(&bob_id, "hello").unwrap();
    loop {
        if let Some(Event::Message(_)) = bob_events.recv().await {
            break;
        }
    }

    if backlog {
        bob.stop();
        loop {
            if let Some(Event::Disconnected { .. }) = bob_events.recv().await {
                break;
            }
        }
    }
    let mut started = Instant::now();
    let mut cpu_before = cpu_time();
    let mut ids = std::collections::HashSet::new();
    for i in 0..n {
        ids.insert(alice.send_text(&bob_id, &format!("message {i}")).unwrap());
    }
    if backlog {
        // Every message is stored at the relay before Bob comes back.
        let mut sent = 0;
        while sent < n {
            if let Some(Event::Receipt {
                kind: ReceiptKind::Sent,
                ..
            }) = alice_events.recv().await
            {
                sent += 1;
            }
        }
        started = Instant::now();
        cpu_before = cpu_time();
        bob.start();
    }
    let receiving = async {
        let mut got = 0;
        while got < n {
            if let Some(Event::Message(_)) = bob_events.recv().await {
                got += 1;
            }
        }
    };
    let delivered = async {
        let mut ticks = 0;
        while ticks < n {
            if let Some(Event::Receipt {
                kind: ReceiptKind::Delivered,
                message_id,
                ..
            }) = alice_events.recv().await
                && ids.contains(&message_id)
            {
                ticks += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(receiving, delivered)
    })
    .await
    .expect("the run finished in time");
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    alice.stop();
    bob.stop();
    println!(
        "mode={} messages={n} seconds={:.2} messages_per_second={:.0} client_cpu_us_per_message={:.0}",
        if backlog { "backlog" } else { "live" },
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        cpu.as_micros() as f64 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
