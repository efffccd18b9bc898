//! `hush demo`: a relay on a free loopback port, four real clients, every feature, and a
//! transcript of what each side saw. Any failed check ends it with an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hush_client::{
    Address, Body, Client, ClientConfig, Conversation, Event, GroupChange, ReceiptKind,
};
use hush_crypto::StorageKey;
use hush_relay::store::Addr;
use prost_free::payload_is_group;

/// Settings of `hush demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Keep the relay's and clients' files in this directory (default: a temporary one,
    /// removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
}

const WAIT: Duration = Duration::from_secs(20);

type Result<T> = std::result::Result<T, String>;

fn check(ok: bool, what: &str) -> Result<()> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn short(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(4)])
}

fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// One person's device in the demo, with its event stream.
struct Peer {
    name: &'static str,
    client: Client,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    db: PathBuf,
    key: [u8; 32],
    url: String,
    /// Events are not printed (a long exchange shown only by its result).
    quiet: bool,
}

impl Peer {
    fn open(name: &'static str, dir: &Path, url: &str) -> Result<Self> {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        let db = dir.join(format!("{name}.db"));
        let (client, events) = open_client(name, &db, key, url)?;
        Ok(Self {
            name,
            client,
            events,
            db,
            key,
            url: url.to_string(),
            quiet: false,
        })
    }

    /// Simulates the app closing and opening again: a new client on the same store.
    fn reopen(&mut self) -> Result<()> {
        self.client.stop();
        let (client, events) = open_client(self.name, &self.db, self.key, &self.url)?;
        self.client = client;
        self.events = events;
        Ok(())
    }

    async fn online(&mut self) -> Result<()> {
        self.client.start();
        self.client
            .wait_connected(WAIT)
            .await
            .map_err(|e| format!("{} could not connect: {e}", self.name))
    }

    async fn offline(&mut self) -> Result<()> {
        self.client.stop();
        self.expect("disconnect", |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await
    }

    /// Waits for an event matching `f`, printing every event on the way.
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> Result<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| format!("{} waited too long for {what}", self.name))?
                .ok_or_else(|| format!("{}'s client stopped", self.name))?;
            if !self.quiet {
                print_event(self.name, &e);
            }
            if let Some(t) = f(&e) {
                return Ok(t);
            }
        }
    }

    async fn message(&mut self) -> Result<hush_client::Message> {
        self.expect("a message", |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }
}

fn open_client(
    name: &str,
    db: &Path,
    key: [u8; 32],
    url: &str,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Event>)> {
    let mut config = ClientConfig::new(url, db, StorageKey::from_bytes(key), name, 1);
    config.poll_interval = Duration::from_millis(500);
    Client::open(config).map_err(|e| format!("{name}: {e}"))
}

fn print_event(who: &str, e: &Event) {
    let line = match e {
        Event::Connected { registered: true } => "connected; registered with the relay".into(),
        Event::Connected { registered: false } => "connected".into(),
        Event::Disconnected { reason } => {
            format!("disconnected ({})", crate::chat::why(reason.as_deref()))
        }
        Event::Message(m) => {
            let what = match &m.body {
                Body::Text(t) => format!("\"{t}\""),
                Body::Attachment(a) => format!(
                    "attachment {} ({} bytes, {})",
                    a.file_name, a.size, a.media_type
                ),
            };
            let conv = match &m.conversation {
                Conversation::Direct(_) => String::new(),
                Conversation::Group(g) => format!(" in group {}", short(g)),
            };
            format!("message from {}{conv}: {what}", m.from)
        }
        Event::Receipt {
            message_id,
            kind,
            by,
            ..
        } => {
            let tick = match kind {
                ReceiptKind::Sent => "✓   sent (stored durably by the relay)",
                ReceiptKind::Delivered => "✓✓  delivered to",
                ReceiptKind::Read => "✓✓  read by",
            };
            if *kind == ReceiptKind::Sent {
                format!("{tick}: message {}", short(message_id))
            } else {
                format!("{tick} {by}: message {}", short(message_id))
            }
        }
        Event::Presence(p) => format!(
            "presence of {}: {}",
            p.user,
            if p.online {
                "online".to_string()
            } else {
                p.last_seen_ms.map_or("offline".into(), |t| {
                    format!("offline, last seen {}", clock(t))
                })
            }
        ),
        Event::IdentityChanged { address, .. } => format!("identity key of {address} changed"),
        Event::Group { group, change, by } => {
            let what = match change {
                GroupChange::Joined { name, members } => format!(
                    "joined \"{name}\" with {}",
                    members
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                GroupChange::Added(a) => format!("{a} was added"),
                GroupChange::Removed(a) => format!("{a} was removed"),
                GroupChange::Left(a) => format!("{a} left"),
                GroupChange::RemovedSelf => "I was removed".into(),
                GroupChange::RoleChanged(a) => format!("{a}'s role changed"),
            };
            format!("group {}: {what} (by {by})", short(group))
        }
        Event::SendFailed { reason, .. } => {
            format!("send failed: {}", crate::chat::why(Some(reason)))
        }
        Event::Dropped { from, reason } => format!("dropped an envelope from {from}: {reason:?}"),
        Event::PrekeysUploaded { count } => format!("uploaded {count} one-time prekeys"),
        Event::SignedPrekeyRotated { id } => format!("rotated signed prekey to #{id}"),
        Event::KemPrekeysUploaded { count } => {
            format!("uploaded {count} one-time KEM prekeys (ML-KEM-768)")
        }
        Event::SessionStarted {
            with,
            post_quantum,
            initiated,
        } => format!(
            "{} session with {with}: {}",
            if *initiated {
                "started a"
            } else {
                "accepted a"
            },
            if *post_quantum {
                "post-quantum (PQXDH)"
            } else {
                "classical (X3DH)"
            }
        ),
        other => format!("{other:?}"),
    };
    println!("  [{who:>5}] {line}");
}

mod prost_free {
    use prost::Message as _;

    /// Whether relay ciphertext is a group payload (a sender-key message).
    pub(super) fn payload_is_group(bytes: &[u8]) -> bool {
        matches!(
            hush_client::proto::client::Payload::decode(bytes).map(|p| p.kind),
            Ok(Some(hush_client::proto::client::payload::Kind::Group(_)))
        )
    }
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let temp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            d.clone()
        }
        None => {
            let mut r = [0u8; 6];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut r);
            temp = TempDir(std::env::temp_dir().join(format!("hush-demo-{}", hex::encode(r))));
            std::fs::create_dir_all(&temp.0).map_err(|e| e.to_string())?;
            temp.0.clone()
        }
    };
    let db = dir.join("relay.db");
    let blob_dir = dir.join("relay-blobs");

    step("A relay on a free loopback port (embedded SQLite)");
    let store = hush_relay::SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let config = hush_relay::Config {
        listen: "127.0.0.1:0".parse().map_err(|_| "address")?,
        blob_dir: blob_dir.clone(),
        online_window: Duration::from_secs(2),
        relay_id: b"hush-demo".to_vec(),
        ..hush_relay::Config::default()
    };
    let relay = hush_relay::Relay::build(config, store)
        .await
        .map_err(|e| e.to_string())?;
    let addr = relay.local_addr();
    let url = format!("ws://{addr}");
    let (stop_relay, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    println!("  relay listening on {addr}; database {}", db.display());

    let mut sent_texts: Vec<String> = Vec::new();
    let result = scenario(&dir, &db, &url, &mut sent_texts).await;
    let _ = stop_relay.send(());
    let _ = relay_task.await;
    result?;

    step("What the relay stored");
    report_relay(&db, &blob_dir, &sent_texts)?;
    println!("\nhush demo: every step passed.");
    Ok(())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn scenario(dir: &Path, db: &Path, url: &str, sent: &mut Vec<String>) -> Result<()> {
    step("Alice, Bob, Carol and Dave register (each device makes its identity key and prekeys)");
    let mut alice = Peer::open("alice", dir, url)?;
    let mut bob = Peer::open("bob", dir, url)?;
    let mut carol = Peer::open("carol", dir, url)?;
    let mut dave = Peer::open("dave", dir, url)?;
    for p in [&mut alice, &mut bob, &mut carol, &mut dave] {
        p.online().await?;
        p.expect("registration", |e| {
            matches!(e, Event::Connected { registered: true }).then_some(())
        })
        .await?;
        p.expect("prekey upload", |e| {
            matches!(e, Event::PrekeysUploaded { .. }).then_some(())
        })
        .await?;
        println!(
            "  {} is {} with identity key {}…",
            p.name,
            p.client.address(),
            short(p.client.identity_key().as_bytes())
        );
    }

    step("Bob goes offline");
    bob.offline().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let p = alice
        .client
        .presence("bob")
        .await
        .map_err(|e| e.to_string())?;
    check(
        !p.online && p.last_seen_ms.is_none(),
        "Bob's presence should be hidden from Alice: he has never written to her",
    )?;
    println!(
        "  alice asks: the relay tells her nothing (Bob has never written to her, so his presence is not hers to see)"
    );

    step("First contact: Alice writes to Bob while he is offline");
    let text = "Hi Bob! This is our first message.";
    sent.push(text.into());
    let first = alice
        .client
        .send_text("bob", text)
        .map_err(|e| e.to_string())?;
    println!(
        "  alice queued message {} (her client fetches Bob's prekey bundle and runs PQXDH)",
        short(&first)
    );
    let pq = alice
        .expect("the session", |e| match e {
            Event::SessionStarted {
                with,
                post_quantum,
                initiated: true,
            } if *with == Address::new("bob", 1) => Some(*post_quantum),
            _ => None,
        })
        .await?;
    check(pq, "the first contact should be post-quantum")?;
    println!(
        "  alice's session with bob.1 is post-quantum: X25519 and ML-KEM-768 (PQXDH), so a recording of it stays safe from a future quantum computer"
    );
    alice.expect("the sent tick", |e| matches!(e, Event::Receipt { message_id, kind: ReceiptKind::Sent, .. } if *message_id == first).then_some(())).await?;

    step("Bob comes back online: the relay delivers the queued message");
    bob.reopen()?;
    bob.online().await?;
    let m = bob.message().await?;
    check(
        m.body == Body::Text(text.into()) && m.from == Address::new("alice", 1),
        "Bob should read Alice's message",
    )?;
    alice.expect("the delivered tick", |e| matches!(e, Event::Receipt { message_id, kind: ReceiptKind::Delivered, .. } if *message_id == first).then_some(())).await?;
    bob.client
        .mark_read(&m.from, &[m.id])
        .map_err(|e| e.to_string())?;
    alice.expect("the read tick", |e| matches!(e, Event::Receipt { message_id, kind: ReceiptKind::Read, .. } if *message_id == first).then_some(())).await?;
    let reply = "Hi Alice, got it.";
    sent.push(reply.into());
    bob.client
        .send_text("alice", reply)
        .map_err(|e| e.to_string())?;
    let m = alice.message().await?;
    check(
        m.body == Body::Text(reply.into()),
        "Alice should read Bob's reply",
    )?;

    step("Presence: online and last seen");
    alice.client.watch_presence("bob");
    alice
        .expect("Bob online", |e| {
            matches!(e, Event::Presence(p) if p.user == "bob" && p.online).then_some(())
        })
        .await?;
    bob.client
        .set_hide_last_seen(true)
        .await
        .map_err(|e| e.to_string())?;
    bob.offline().await?;
    alice.expect("Bob offline, last seen hidden", |e| matches!(e, Event::Presence(p) if p.user == "bob" && !p.online && p.last_seen_ms.is_none()).then_some(())).await?;
    println!("  bob hid his last-seen time: alice sees only \"offline\"");
    bob.reopen()?;
    bob.online().await?;
    bob.client
        .set_hide_last_seen(false)
        .await
        .map_err(|e| e.to_string())?;

    step("A group of four");
    let group = alice
        .client
        .create_group("hush demo", &["bob", "carol", "dave"])
        .await
        .map_err(|e| e.to_string())?;
    for p in [&mut bob, &mut carol, &mut dave] {
        p.expect("joining the group", |e| {
            matches!(
                e,
                Event::Group {
                    change: GroupChange::Joined { .. },
                    ..
                }
            )
            .then_some(())
        })
        .await?;
    }
    let hello = "Welcome to the group, everyone!";
    sent.push(hello.into());
    alice
        .client
        .send_group_text(&group, hello)
        .map_err(|e| e.to_string())?;
    for p in [&mut bob, &mut carol, &mut dave] {
        let m = p.message().await?;
        check(
            m.body == Body::Text(hello.into()) && m.conversation == Conversation::Group(group),
            "every member should read the group message",
        )?;
    }
    let hi = "Hi all, Bob here.";
    sent.push(hi.into());
    bob.client
        .send_group_text(&group, hi)
        .map_err(|e| e.to_string())?;
    for p in [&mut alice, &mut carol, &mut dave] {
        let m = p.message().await?;
        check(
            m.body == Body::Text(hi.into()),
            "every member should read Bob's group message",
        )?;
    }

    step("Alice removes Dave; the next message uses fresh sender keys");
    alice
        .client
        .remove_from_group(&group, "dave")
        .map_err(|e| e.to_string())?;
    dave.expect("his removal", |e| {
        matches!(
            e,
            Event::Group {
                change: GroupChange::RemovedSelf,
                ..
            }
        )
        .then_some(())
    })
    .await?;
    for p in [&mut bob, &mut carol] {
        p.expect("Dave's removal", |e| {
            matches!(e, Event::Group { change: GroupChange::Removed(a), .. } if a.user == "dave")
                .then_some(())
        })
        .await?;
    }
    carol.offline().await?;
    let secret = "Dave cannot read this one.";
    sent.push(secret.into());
    alice
        .client
        .send_group_text(&group, secret)
        .map_err(|e| e.to_string())?;
    let m = bob.message().await?;
    check(
        m.body == Body::Text(secret.into()),
        "Bob should read the post-removal message",
    )?;
    // Carol is offline, so the relay still holds her copy: hand it to Dave.
    let inspection = hush_relay::store::inspect(db).map_err(|e| e.to_string())?;
    let copy = inspection
        .queued
        .iter()
        .rev()
        .find(|(to, e)| {
            to == &Addr {
                user: "carol".into(),
                device: 1,
            } && e.sender.user == "alice"
                && payload_is_group(&e.ciphertext)
        })
        .ok_or("the relay should hold Carol's copy")?;
    match dave.client.try_decrypt_group_payload(&copy.1.ciphertext) {
        Ok(_) => return Err("Dave decrypted a message sent after his removal".into()),
        Err(e) => println!(
            "  dave takes Carol's copy from the relay's database and tries to decrypt it: {e}"
        ),
    }
    carol.reopen()?;
    carol.online().await?;
    let m = carol.message().await?;
    check(
        m.body == Body::Text(secret.into()),
        "Carol should read it when she is back",
    )?;

    step("An attachment, encrypted in chunks and uploaded as an opaque blob");
    let file = dir.join("holiday.bin");
    let mut data = vec![0u8; 1_500_000];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut data);
    std::fs::write(&file, &data).map_err(|e| e.to_string())?;
    let mut last = 0;
    alice
        .client
        .send_file(
            Conversation::Direct("bob".into()),
            &file,
            "application/octet-stream",
            |p| {
                let pct = p.done * 100 / p.total.max(1);
                if pct >= last + 25 || p.done == p.total {
                    println!(
                        "  [alice] upload {pct:>3}% ({} / {} bytes)",
                        p.done, p.total
                    );
                    last = pct;
                }
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let m = bob.message().await?;
    let Body::Attachment(a) = &m.body else {
        return Err("Bob should receive an attachment".into());
    };
    let saved = dir.join("bob-holiday.bin");
    let mut last = 0;
    bob.client
        .download(a, &saved, |p| {
            let pct = p.done * 100 / p.total.max(1);
            if pct >= last + 25 || p.done == p.total {
                println!(
                    "  [  bob] download {pct:>3}% ({} / {} bytes)",
                    p.done, p.total
                );
                last = pct;
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    let got = std::fs::read(&saved).map_err(|e| e.to_string())?;
    check(got == data, "Bob's copy should equal Alice's file")?;
    println!(
        "  bob verified the digest, decrypted, and has an identical {} bytes",
        got.len()
    );

    step("The post-quantum ratchet: a fresh ML-KEM-768 secret every few dozen messages");
    // Each message carries a 104-byte chunk of an ML-KEM key or ciphertext in its header;
    // a completed exchange is mixed into the root key (SPEC §7.8).
    println!("  alice and bob exchange 60 messages (not shown: ping 00 .. pong 29)");
    alice.quiet = true;
    bob.quiet = true;
    for round in 0..30 {
        let (ping, pong) = (format!("ping {round:02}"), format!("pong {round:02}"));
        alice
            .client
            .send_text("bob", &ping)
            .map_err(|e| e.to_string())?;
        bob.message().await?;
        bob.client
            .send_text("alice", &pong)
            .map_err(|e| e.to_string())?;
        alice.message().await?;
        sent.extend([ping, pong]);
    }
    alice.quiet = false;
    bob.quiet = false;
    for (who, peer, dev) in [("alice", "bob", &alice), ("  bob", "alice", &bob)] {
        let d = dev
            .client
            .safety_numbers(peer)
            .await
            .map_err(|e| e.to_string())?;
        let pq = d
            .first()
            .and_then(|d| d.pq_ratchet)
            .ok_or("the session should run the post-quantum ratchet")?;
        println!(
            "  [{who}] after 60 more messages: post-quantum epoch {}, ML-KEM secrets of epochs 1..={} mixed in",
            pq.epoch, pq.mixed
        );
        check(
            pq.mixed >= 1,
            "at least one post-quantum epoch should be complete",
        )?;
    }

    step("Safety numbers: Alice and Bob compare out of band");
    let a = alice
        .client
        .safety_numbers("bob")
        .await
        .map_err(|e| e.to_string())?;
    let b = bob
        .client
        .safety_numbers("alice")
        .await
        .map_err(|e| e.to_string())?;
    let (Some(da), Some(db)) = (a.first(), b.first()) else {
        return Err("no safety numbers".into());
    };
    let (na, nb) = (&da.safety_number, &db.safety_number);
    println!("  alice sees: {}", na.display_groups().join(" "));
    println!("  bob sees:   {}", nb.display_groups().join(" "));
    check(
        da.post_quantum == Some(true) && db.post_quantum == Some(true),
        "both sessions should be post-quantum",
    )?;
    println!("  post-quantum: yes (on both sides)");
    check(
        na.digits() == nb.digits() && na.matches_scanned(nb.scannable()),
        "safety numbers should match",
    )?;
    println!("  they match: no one is in the middle");

    for p in [&mut alice, &mut bob, &mut carol, &mut dave] {
        p.client.stop();
    }
    Ok(())
}

fn report_relay(db: &Path, blob_dir: &Path, sent: &[String]) -> Result<()> {
    let i = hush_relay::store::inspect(db).map_err(|e| e.to_string())?;
    println!("  devices (public identity keys only):");
    for (a, k) in &i.devices {
        println!("    {}.{}  {}", a.user, a.device, hex::encode(k));
    }
    println!(
        "  signed prekeys: {} ({} post-quantum), one-time prekeys left: {}",
        i.signed_prekeys, i.post_quantum_signed_prekeys, i.one_time_prekeys
    );
    println!(
        "  ML-KEM-768 prekeys (1,184-byte public keys, signed): {} one-time left, {} last-resort",
        i.kem_prekeys, i.last_resort_kem_prekeys
    );
    println!(
        "  presence: {}",
        i.presence
            .iter()
            .map(|(u, t, h)| format!(
                "{u} last active {}{}",
                clock(*t),
                if *h { " (hidden)" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("  receipts waiting: {}", i.receipts);
    println!("  envelopes still queued: {}", i.queued.len());
    for (to, e) in i.queued.iter().take(5) {
        println!(
            "    for {}.{} from {}.{}: {} bytes of ciphertext {}…",
            to.user,
            to.device,
            e.sender.user,
            e.sender.device,
            e.ciphertext.len(),
            short(&e.ciphertext)
        );
    }
    println!(
        "  attachment blobs: {}",
        i.blobs
            .iter()
            .map(|(id, n)| format!("{}… ({n} bytes)", &id[..12.min(id.len())]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Scan every byte the relay wrote for every text the demo sent. The WAL first: if it is
    // checkpointed and removed meanwhile, its pages are in the database file, read after.
    let mut files: Vec<PathBuf> = ["-wal", "-shm", ""]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(blob_dir) {
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    let mut scanned = 0usize;
    for f in &files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", f.display())),
        };
        scanned += bytes.len();
        for t in sent {
            let found = bytes.windows(t.len()).any(|w| w == t.as_bytes());
            check(!found, &format!("plaintext found in {}", f.display()))?;
        }
    }
    println!(
        "  scanned {} files ({scanned} bytes) for the {} texts sent: none found. The relay holds ciphertext only.",
        files.len(),
        sent.len()
    );
    Ok(())
}
