//! Abuse reports from the command line (SPEC §17): `/report` in `hush chat`, then
//! `hush relay --list-reports` shows the operator the message, who sent it and who reported
//! it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chat, hush, relay, scratch};

#[test]
fn a_reported_message_reaches_the_operators_list() {
    let dir = scratch("report");
    let (relay_proc, addr) = relay(&dir, "127.0.0.1:0", &[]);
    let mut alice = chat(&dir, &addr, "alice", &"11".repeat(32));
    let mut bob = chat(&dir, &addr, "bob", &"22".repeat(32));
    for (who, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        who.say("/register");
        who.wait_for(&format!("-- registered as {name}.1"));
    }
    alice.say("/to bob");
    alice.say("you will regret this");
    bob.wait_for("<< alice.1");
    bob.say("/report threats");
    bob.wait_for("-- reported alice.1");
    alice.kill();
    bob.kill();
    relay_proc.kill();
    let out = hush()
        .args(["relay", "--list-reports", "--db"])
        .arg(dir.join("relay.db"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("bob.1 reports alice.1"), "{text}");
    assert!(text.contains("reason: threats"), "{text}");
    assert!(
        text.contains("consent: Reporting sends this message, its sender and when it was sent"),
        "{text}"
    );
    assert!(
        text.contains(r#"message: "you will regret this""#),
        "{text}"
    );
    assert!(text.contains("1 reports"), "{text}");
}
