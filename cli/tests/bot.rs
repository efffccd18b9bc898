//! `hush bot` end to end through a real relay (issue 20, bots): a user talks to a bot run
//! from a rules file, one-to-one and in a group, and gets each answer once, in order, with
//! the ticks, while the bot is killed (-9) once and the relay restarted once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Dev, Proc, hush, open, relay, scratch, text};
use hush_client::{Body, Conversation, Event, Message, ReceiptKind};

const RULES: &str = "# the shop's bot\n\
    menu => 1) status ORDER 2) echo TEXT 3) catalog\n\
    status * => Order {rest}: shipped.\n\
    echo * => {rest}\n\
    catalog => file catalog.txt text/plain\n\
    * => Say menu.\n";

const CATALOG: &str = "apples 3\npears 4\n";

fn bot(dir: &Path, addr: &str) -> Proc {
    let mut cmd = hush();
    cmd.args([
        "bot",
        "--relay",
        &format!("ws://{addr}"),
        "--user",
        "shop",
        "--data",
    ])
    .arg(dir.join("shop"))
    .arg("--script")
    .arg(dir.join("rules.txt"))
    .env("HUSH_STORAGE_KEY", "42".repeat(32));
    let p = Proc::spawn(cmd);
    p.wait_for("connected");
    p
}

/// The bot's next answer to Ann.
async fn answer(ann: &mut Dev) -> Message {
    ann.expect("the bot's answer", |e| match e {
        Event::Message(m) if m.from.user == "shop" => Some(m.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_answers_each_message_once_in_order_across_restarts() {
    let dir = scratch("bot");
    std::fs::write(dir.join("rules.txt"), RULES).unwrap();
    std::fs::write(dir.join("catalog.txt"), CATALOG).unwrap();
    let (relay_proc, addr) = relay(&dir, "127.0.0.1:0", &[]);
    let shop = bot(&dir, &addr);
    let mut ann = open(&dir, &addr, "ann", 1, [7; 32], |_| {});
    ann.online().await;

    // One-to-one, with the ticks: the bot reads what it answers.
    let asked = ann.client.send_text("shop", "menu").unwrap();
    let m = answer(&mut ann).await;
    assert_eq!(text(&m), "1) status ORDER 2) echo TEXT 3) catalog");
    assert_eq!(m.conversation, Conversation::Direct("shop".into()));
    ann.expect("the read tick", |e| match e {
        Event::Receipt {
            message_id,
            kind: ReceiptKind::Read,
            ..
        } if *message_id == asked => Some(()),
        _ => None,
    })
    .await;
    let ticks: Vec<ReceiptKind> = ann
        .client
        .receipts(&asked)
        .unwrap()
        .iter()
        .map(|(_, kind, _)| *kind)
        .collect();
    assert_eq!(
        ticks,
        [ReceiptKind::Sent, ReceiptKind::Delivered, ReceiptKind::Read]
    );
    ann.client.send_text("shop", "status A-17").unwrap();
    assert_eq!(text(&answer(&mut ann).await), "Order A-17: shipped.");

    // The bot is killed; what comes meanwhile is answered when it is back, in order.
    shop.kill();
    for t in ["echo one", "echo two", "hello"] {
        ann.client.send_text("shop", t).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shop = bot(&dir, &addr);
    for want in ["one", "two", "Say menu."] {
        assert_eq!(text(&answer(&mut ann).await), want);
    }

    // The relay restarts; a file comes on request.
    relay_proc.kill();
    ann.client.send_text("shop", "catalog").unwrap();
    let (relay_proc, _) = relay(&dir, &addr, &[]);
    let m = answer(&mut ann).await;
    let Body::Attachment(att) = &m.body else {
        panic!("the catalog is a file: {m:?}");
    };
    assert_eq!(att.file_name, "catalog.txt");
    let saved = dir.join("saved-catalog.txt");
    ann.client.download(att, &saved, |_| {}).await.unwrap();
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), CATALOG);

    // In a group, the bot answers in the group.
    let g = ann.client.create_group("orders", &["shop"]).await.unwrap();
    ann.client.send_group_text(&g, "echo in the group").unwrap();
    let m = answer(&mut ann).await;
    assert_eq!(
        (text(&m), &m.conversation),
        ("in the group", &Conversation::Group(g))
    );

    // Nothing was answered twice: no more answers come, and the bot, restarted once more,
    // answers nothing again.
    drop(shop);
    let shop = bot(&dir, &addr);
    let extra: Vec<String> = ann
        .drain_messages(Duration::from_secs(3))
        .await
        .iter()
        .filter(|m| m.from.user == "shop")
        .map(|m| text(m).to_string())
        .collect();
    assert!(extra.is_empty(), "answered twice: {extra:?}");
    let answers: Vec<String> = ann
        .client
        .messages()
        .unwrap()
        .iter()
        .filter(|m| m.from.user == "shop")
        .map(|m| text(m).to_string())
        .collect();
    assert_eq!(
        answers,
        [
            "1) status ORDER 2) echo TEXT 3) catalog",
            "Order A-17: shipped.",
            "one",
            "two",
            "Say menu.",
            "<attachment>",
            "in the group",
        ]
    );
    drop((shop, relay_proc));
}
