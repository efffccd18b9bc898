//! A shop's chatbot on the SDK: an ordinary client that answers one-to-one and group
//! messages with rule-based replies (a menu, an order status, an echo), sends its catalog
//! as a file on request, marks what it answered as read, and answers each message exactly
//! once across its own restarts and the relay's ([`Client::reply`] derives each reply's id
//! from the message it answers, SPEC §16.2).
//!
//! ```text
//! hush relay --listen 127.0.0.1:7800 --db /tmp/relay.db &
//! cargo run -p hush-client --example bot -- ws://127.0.0.1:7800 /tmp/shop-bot catalog.txt
//! hush chat --user ann         # then: /to shop, menu
//! ```
//!
//! Without Rust, `hush bot --script rules.txt` runs the same kind of bot from a rules file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use hush_client::{Body, Client, ClientConfig, ClientError, Event, Message};
use hush_crypto::StorageKey;

/// The rules: what to answer to a text.
enum Answer {
    Text(String),
    File,
}

fn rules(text: &str) -> Answer {
    let text = text.trim();
    let lower = text.to_lowercase();
    if lower == "menu" {
        Answer::Text("1) status ORDER  2) echo TEXT  3) catalog".into())
    } else if let Some(order) = lower.strip_prefix("status ") {
        Answer::Text(format!(
            "Order {}: shipped, arriving tomorrow.",
            order.trim()
        ))
    } else if lower.starts_with("echo ") {
        Answer::Text(text[5..].trim().to_string())
    } else if lower == "catalog" {
        Answer::File
    } else {
        Answer::Text("Sorry, I did not get that. Send \"menu\".".into())
    }
}

/// Answers `m` unless it is ours or answered already.
async fn handle(client: &Client, catalog: &Path, m: &Message) -> Result<(), ClientError> {
    if m.outgoing || client.replied(m)? {
        return Ok(());
    }
    let body = match &m.body {
        Body::Text(t) => match rules(t) {
            Answer::Text(t) => Body::Text(t),
            Answer::File => {
                Body::Attachment(client.upload_file(catalog, "text/plain", |_| {}).await?)
            }
        },
        Body::Attachment(_) => Body::Text("Thanks for the file!".into()),
    };
    if client.reply(m, body)?.is_some() {
        client.mark_read(&m.from, &[m.id])?;
        println!("answered {} in {:?}", m.from, m.conversation);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let relay = args.next().unwrap_or_else(|| "ws://127.0.0.1:7800".into());
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "shop-bot".into()));
    let catalog = PathBuf::from(args.next().unwrap_or_else(|| "catalog.txt".into()));
    std::fs::create_dir_all(&dir)?;
    // An app keeps the storage key in the platform keystore; here, beside the store.
    let key_path = dir.join("storage.key");
    if !key_path.exists() {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&key_path)?, &key)?;
    }
    let key: [u8; 32] = std::fs::read(&key_path)?.try_into().expect("a 32-byte key");
    let config = ClientConfig::new(
        relay,
        dir.join("client.db"),
        StorageKey::from_bytes(key),
        "shop",
        1,
    );
    let (client, mut events) = Client::open(config)?;
    client.start();
    // What came while the bot was away, or between a message and its answer.
    for m in client.messages()? {
        handle(&client, &catalog, &m).await?;
    }
    while let Some(e) = events.recv().await {
        if let Event::Message(m) = e {
            handle(&client, &catalog, &m).await?;
        }
    }
    Ok(())
}
