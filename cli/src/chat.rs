//! `hush chat`: a line-based client for a person. Incoming messages and receipts are
//! printed as they arrive; lines starting with `/` are commands, other lines are sent to
//! the current conversation.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use hush_client::{
    Address, Attachment, Body, Client, ClientConfig, Conversation, DeviceLink, Event, GroupChange,
    GroupId, Message, Presence, ReceiptKind,
};
use hush_crypto::StorageKey;
use tokio::io::AsyncBufReadExt;

/// Settings of `hush chat`.
#[derive(clap::Args, Debug)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// A device link (hex) from one of your existing devices, to add this device.
    #[arg(long)]
    link: Option<String>,
}

/// Which device to be, and where its relay is (`hush chat`, `hush bot`).
#[derive(clap::Args, Debug)]
pub(crate) struct DeviceArgs {
    /// The relay, `ws://host:port` or `wss://host:port`.
    #[arg(long, env = "HUSH_RELAY", default_value = "ws://127.0.0.1:7800")]
    relay: String,
    /// Your user id (the first device to register it claims it).
    #[arg(long, env = "HUSH_USER")]
    user: String,
    /// This device's number.
    #[arg(long, default_value_t = 1)]
    device: u32,
    /// Where this device keeps its store [default: ~/.hush/USER-DEVICE].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Registration token, for relays that require one.
    #[arg(long, env = "HUSH_REGISTRATION_TOKEN")]
    registration_token: Option<hush_relay::Redacted<String>>,
    /// Extra CA certificates (PEM) to trust for wss://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

const HELP: &str = "commands:
  /register                 connect and register this device (done at start; shows status)
  /to USER                  talk to USER (all their devices)
  /group create NAME USER…  create a group and talk in it
  /group use NAME           talk in a group
  /group add USER | /group remove USER | /group leave | /group list
  /send TEXT                send (plain lines are sent too)
  /file PATH [MEDIA-TYPE]   send a file, with a progress bar
  /save N PATH              save received attachment number N
  /report [REASON]          report the last message received as abuse: reporting sends
                            this message, its sender and when it was sent to the
                            relay's operator
  /forward USER|#GROUP…     forward the last message shown (at most 5 chats; 1 once
                            it was forwarded many times)
  /verify USER              show safety numbers with USER's devices
  /presence USER            show USER's presence (and watch it)
  /hide on|off              hide or show your last-seen time
  /whoami                   your address and identity key
  /link DEVICE KEY          let a new device (identity KEY, hex) join as DEVICE; prints the link
  /quit";

/// What `/report` tells the user it does, sent with the report as the user's consent.
const REPORT_CONSENT: &str = "Reporting sends this message, its sender and when it was \
    sent to the relay's operator.";

/// The storage key lives beside the store, readable only by the user. (An app would keep
/// it in the platform keystore.) `HUSH_STORAGE_KEY` (hex) overrides it.
fn storage_key(dir: &Path) -> Result<StorageKey, String> {
    if let Ok(hex_key) = std::env::var("HUSH_STORAGE_KEY") {
        let bytes: [u8; 32] = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("HUSH_STORAGE_KEY must be 64 hex digits")?;
        return Ok(StorageKey::from_bytes(bytes));
    }
    let path = dir.join("storage.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{} is not a key", path.display()))?;
        return Ok(StorageKey::from_bytes(bytes));
    }
    let mut key = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(hex::encode(key).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| e.to_string())?;
    Ok(StorageKey::from_bytes(key))
}

fn short(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(4)])
}

struct State {
    client: Client,
    to: Option<Conversation>,
    groups: HashMap<String, GroupId>,
    attachments: Vec<Attachment>,
    presence: HashMap<String, Presence>,
    /// The last message shown, for `/forward`.
    last: Option<Message>,
    /// The last message received from someone else, for `/report`.
    last_received: Option<Message>,
}

/// Opens the device's client (its store under `--data`, its storage key beside it).
pub(crate) fn open(
    args: DeviceArgs,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Event>), String> {
    let dir = match args.data {
        Some(d) => d,
        None => {
            let home = std::env::var_os("HOME").ok_or("set --data or HOME")?;
            PathBuf::from(home)
                .join(".hush")
                .join(format!("{}-{}", args.user, args.device))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = storage_key(&dir)?;
    let mut config = ClientConfig::new(
        &args.relay,
        dir.join("client.db"),
        key,
        &args.user,
        args.device,
    );
    config.registration_token = args.registration_token.map(|t| t.0.into_bytes());
    config.ca_file = args.ca_file;
    Client::open(config).map_err(|e| e.to_string())
}

pub(crate) async fn run(args: ChatArgs) -> Result<(), String> {
    let (client, mut events) = open(args.device)?;
    if let Some(link) = args.link {
        let link = hex::decode(link.trim())
            .ok()
            .and_then(|b| DeviceLink::from_bytes(&b))
            .ok_or("--link is not a device link")?;
        client.set_link(link);
    }
    println!(
        "hush chat: {} with identity key {} (type /help)",
        client.address(),
        hex::encode(client.identity_key().as_bytes())
    );
    client.start();
    let mut state = State {
        client: client.clone(),
        to: None,
        groups: HashMap::new(),
        attachments: Vec::new(),
        last: None,
        last_received: None,
        presence: HashMap::new(),
    };
    refresh_groups(&mut state);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                match command(&mut state, line.trim()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => println!("!! {e}"),
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                show(&mut state, event);
            }
        }
    }
    // Let queued work reach the relay before leaving, briefly.
    for _ in 0..20 {
        if client.outbox_len().map_or(true, |n| n == 0) || !client.is_connected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client.stop();
    Ok(())
}

fn refresh_groups(state: &mut State) {
    if let Ok(groups) = state.client.groups() {
        state.groups = groups.into_iter().map(|(id, name, _)| (name, id)).collect();
    }
}

fn show(state: &mut State, event: Event) {
    match event {
        Event::Connected { registered } => {
            println!(
                "-- connected{}",
                if registered { " (registered)" } else { "" }
            )
        }
        Event::Disconnected { reason } => println!("-- disconnected: {}", why(reason.as_deref())),
        Event::Message(m) => {
            let conv = match &m.conversation {
                Conversation::Direct(u) if m.outgoing => format!("you → {u}"),
                Conversation::Direct(_) => "you".to_string(),
                Conversation::Group(g) => format!(
                    "#{}",
                    state
                        .groups
                        .iter()
                        .find(|(_, id)| *id == g)
                        .map_or_else(|| short(g), |(n, _)| n.clone())
                ),
            };
            if m.before_removal {
                println!(
                    "-- warning: {} sent the next message before it learned of the group's latest removal; the removed member may be able to read it",
                    m.from
                );
            }
            let conv = if m.forwarded_many_times() {
                format!("{conv}, forwarded many times")
            } else if m.is_forwarded() {
                format!("{conv}, forwarded")
            } else {
                conv
            };
            state.last = Some(m.clone());
            if m.reportable {
                state.last_received = Some(m.clone());
            }
            match &m.body {
                Body::Text(t) => println!("<< {} [{conv}]: {t}", m.from),
                Body::Attachment(a) => {
                    state.attachments.push(a.clone());
                    println!(
                        "<< {} [{conv}]: file {} ({} bytes, {}) — /save {} PATH",
                        m.from,
                        a.file_name,
                        a.size,
                        a.media_type,
                        state.attachments.len()
                    );
                }
            }
            if !m.outgoing {
                let _ = state.client.mark_read(&m.from, &[m.id]);
            }
        }
        Event::Receipt {
            message_id,
            kind,
            by,
            ..
        } => match kind {
            ReceiptKind::Sent => println!("-- sent {}", short(&message_id)),
            ReceiptKind::Delivered => println!("-- delivered {} {by}", short(&message_id)),
            ReceiptKind::Read => println!("-- read {} {by}", short(&message_id)),
        },
        Event::Presence(p) if state.presence.get(&p.user) == Some(&p) => {}
        Event::Presence(p) => {
            state.presence.insert(p.user.clone(), p.clone());
            println!(
                "-- presence {}: {}",
                p.user,
                if p.online {
                    "online".to_string()
                } else {
                    p.last_seen_ms.map_or("offline".into(), |t| {
                        format!("last seen {}s ago", hush_now().saturating_sub(t) / 1000)
                    })
                }
            );
        }
        Event::IdentityChanged {
            address,
            safety_number,
        } => println!(
            "-- identity changed: {address}; new safety number {} (use /verify {})",
            safety_number.digits(),
            address.user
        ),
        Event::Group { group, change, by } => {
            refresh_groups(state);
            let what = match change {
                GroupChange::Joined { name, members } => format!(
                    "you joined #{name} with {}",
                    members
                        .iter()
                        .map(Address::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                GroupChange::Added(a) => format!("{a} was added"),
                GroupChange::Removed(a) => format!("{a} was removed"),
                GroupChange::Left(a) => format!("{a} left"),
                GroupChange::RemovedSelf => "you were removed".into(),
                GroupChange::RoleChanged(a) => format!("{a}'s role changed"),
            };
            println!("-- group {}: {what} (by {by})", short(&group));
        }
        Event::SendFailed { message_id, reason } => {
            println!("-- failed {}: {}", short(&message_id), why(Some(&reason)))
        }
        Event::Dropped { from, reason } => println!("-- dropped from {from}: {reason:?}"),
        Event::SessionStarted {
            with, post_quantum, ..
        } => println!(
            "-- new session with {with}{}",
            if post_quantum {
                " (post-quantum)"
            } else {
                " (classical: the device publishes no post-quantum keys)"
            }
        ),
        _ => {}
    }
}

fn hush_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn progress_bar(label: &str, done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH) as usize;
    eprint!(
        "\r{label} [{}{}] {done}/{total} bytes",
        "#".repeat(filled),
        " ".repeat(WIDTH as usize - filled)
    );
    if done >= total {
        eprintln!();
    }
}

/// Runs one input line. `Ok(false)` to quit.
async fn command(state: &mut State, line: &str) -> Result<bool, String> {
    let e = |e: hush_client::ClientError| e.to_string();
    if line.is_empty() {
        return Ok(true);
    }
    let (cmd, rest) = match line.strip_prefix('/') {
        Some(c) => c.split_once(' ').unwrap_or((c, "")),
        None => ("send", line),
    };
    let rest = rest.trim();
    match cmd {
        "help" => println!("{HELP}"),
        "quit" | "exit" => return Ok(false),
        "register" => {
            state
                .client
                .wait_connected(std::time::Duration::from_secs(15))
                .await
                .map_err(e)?;
            println!(
                "-- registered as {} with identity key {}",
                state.client.address(),
                hex::encode(state.client.identity_key().as_bytes())
            );
        }
        "whoami" => println!(
            "{} {}",
            state.client.address(),
            hex::encode(state.client.identity_key().as_bytes())
        ),
        "to" => {
            if rest.is_empty() {
                return Err("usage: /to USER".into());
            }
            state.to = Some(Conversation::Direct(rest.to_string()));
            println!("-- talking to {rest}");
        }
        "send" => {
            let to = state.to.clone().ok_or("choose someone first: /to USER")?;
            let id = state
                .client
                .send(to, Body::Text(rest.to_string()))
                .map_err(e)?;
            println!("-- queued {}", short(&id));
        }
        "file" => {
            let to = state.to.clone().ok_or("choose someone first: /to USER")?;
            let mut parts = rest.split_whitespace();
            let path = parts.next().ok_or("usage: /file PATH [MEDIA-TYPE]")?;
            let media = parts.next().unwrap_or("application/octet-stream");
            let id = state
                .client
                .send_file(to, Path::new(path), media, |p| {
                    progress_bar("upload", p.done, p.total)
                })
                .await
                .map_err(e)?;
            println!("-- queued {}", short(&id));
        }
        "report" => {
            let m = state
                .last_received
                .clone()
                .ok_or("no message received yet")?;
            state
                .client
                .report(&m, rest.trim(), REPORT_CONSENT)
                .await
                .map_err(e)?;
            println!("-- reported {}'s message {}", m.from, short(&m.id));
        }
        "forward" => {
            let m = state.last.clone().ok_or("no message to forward yet")?;
            refresh_groups(state);
            let to = rest
                .split_whitespace()
                .map(|t| match t.strip_prefix('#') {
                    Some(name) => state
                        .groups
                        .get(name)
                        .map(|g| Conversation::Group(*g))
                        .ok_or_else(|| format!("no group #{name}")),
                    None => Ok(Conversation::Direct(t.to_string())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ids = state.client.forward(&m, &to).map_err(e)?;
            println!("-- forwarded to {} chat(s)", ids.len());
        }
        "save" => {
            let mut parts = rest.split_whitespace();
            let n: usize = parts
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("usage: /save N PATH")?;
            let path = parts.next().ok_or("usage: /save N PATH")?;
            let a = state
                .attachments
                .get(n.wrapping_sub(1))
                .cloned()
                .ok_or("no such attachment")?;
            state
                .client
                .download(&a, Path::new(path), |p| {
                    progress_bar("download", p.done, p.total)
                })
                .await
                .map_err(e)?;
            println!("-- saved {path} ({} bytes, digest verified)", a.size);
        }
        "verify" | "presence" if rest.is_empty() => return Err(format!("usage: /{cmd} USER")),
        "verify" => {
            for d in state.client.safety_numbers(rest).await.map_err(e)? {
                println!(
                    "-- safety number with {}: {} (post-quantum: {}){}",
                    d.address,
                    d.safety_number.display_groups().join(" "),
                    match d.post_quantum {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "no session yet",
                    },
                    d.pq_ratchet.map_or(String::new(), |pq| match pq.mixed {
                        0 => format!(", post-quantum ratchet in epoch {}", pq.epoch),
                        m => format!(
                            ", post-quantum ratchet in epoch {} (ML-KEM secrets of epochs 1..={m} mixed in)",
                            pq.epoch
                        ),
                    })
                );
            }
        }
        "presence" => {
            let p = state.client.presence(rest).await.map_err(e)?;
            state.client.watch_presence(rest);
            show(state, Event::Presence(p));
        }
        "hide" => {
            state
                .client
                .set_hide_last_seen(rest == "on")
                .await
                .map_err(e)?;
            println!(
                "-- last seen {}",
                if rest == "on" { "hidden" } else { "shown" }
            );
        }
        "link" => {
            let mut parts = rest.split_whitespace();
            let device: u32 = parts
                .next()
                .and_then(|d| d.parse().ok())
                .ok_or("usage: /link DEVICE KEY")?;
            let key = parts
                .next()
                .and_then(|k| hex::decode(k).ok())
                .and_then(|k| hush_crypto::IdentityPublicKey::from_slice(&k).ok())
                .ok_or("KEY must be a 64-hex-digit identity key")?;
            let link = state.client.link_device(device, &key);
            println!(
                "-- link for device {device}: {}",
                hex::encode(link.to_bytes())
            );
        }
        "group" => {
            let mut parts = rest.split_whitespace();
            match parts.next() {
                Some("create") => {
                    let name = parts.next().ok_or("usage: /group create NAME USER…")?;
                    let users: Vec<&str> = parts.collect();
                    let id = state.client.create_group(name, &users).await.map_err(e)?;
                    state.groups.insert(name.to_string(), id);
                    state.to = Some(Conversation::Group(id));
                    println!("-- created #{name}");
                }
                Some("use") => {
                    refresh_groups(state);
                    let name = parts.next().ok_or("usage: /group use NAME")?;
                    let id = *state.groups.get(name).ok_or("no such group")?;
                    state.to = Some(Conversation::Group(id));
                    println!("-- talking in #{name}");
                }
                Some(op @ ("add" | "remove")) => {
                    let Some(Conversation::Group(id)) = state.to.clone() else {
                        return Err("use a group first: /group use NAME".into());
                    };
                    let user = parts.next().ok_or("usage: /group add|remove USER")?;
                    if op == "add" {
                        state.client.add_to_group(&id, user).await.map_err(e)?;
                    } else {
                        state.client.remove_from_group(&id, user).map_err(e)?;
                    }
                    println!("-- {op} {user}: done");
                }
                Some("leave") => {
                    let Some(Conversation::Group(id)) = state.to.clone() else {
                        return Err("use a group first: /group use NAME".into());
                    };
                    state.client.leave_group(&id).map_err(e)?;
                    state.to = None;
                    println!("-- left");
                }
                Some("list") => {
                    for (id, name, members) in state.client.groups().map_err(e)? {
                        let members: Vec<String> = members.iter().map(Address::to_string).collect();
                        println!("-- #{name} ({}): {}", short(&id), members.join(", "));
                    }
                }
                _ => return Err("usage: /group create|use|add|remove|leave|list".into()),
            }
        }
        other => return Err(format!("unknown command /{other} (try /help)")),
    }
    Ok(true)
}

/// An error and its causes, for one line of output; "stopped" for none.
pub(crate) fn why(e: Option<&hush_client::ClientError>) -> String {
    let Some(e) = e else {
        return "stopped".into();
    };
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
