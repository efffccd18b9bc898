//! The store contract: the same operations give the same answers on every backend
//! (`SqliteStore`, `MemoryStore`), uncommitted transactions leave nothing behind, and
//! committed ones survive a reopen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_client::store::{MemoryStore, SqliteStore, Store, Tick};
use hush_client::{Address, ReceiptKind};

/// Runs a fixed script of operations and returns everything it read, as text.
fn script(store: &mut dyn Store) -> Vec<String> {
    let mut seen = Vec::new();
    let alice = Address::new("alice", 1);
    let alice2 = Address::new("alice", 2);
    let bob = Address::new("bob", 7);
    {
        let tx = store.begin().unwrap();
        tx.set_meta("k", b"v").unwrap();
        tx.set_device_key(&alice2, b"key-a2").unwrap();
        tx.set_device_key(&alice, b"key-a1").unwrap();
        tx.set_device_key(&bob, b"key-b").unwrap();
        tx.put_session(&alice, b"sealed-session").unwrap();
        tx.put_session(&bob, b"sealed-session-b").unwrap();
        tx.set_previous_sessions(&alice, &[b"p0".to_vec(), b"p1".to_vec(), b"p2".to_vec()])
            .unwrap();
        tx.set_previous_sessions(&alice, &[b"q0".to_vec(), b"q1".to_vec()])
            .unwrap();
        tx.set_previous_sessions(&bob, &[b"pb".to_vec()]).unwrap();
        tx.put_signed_prekey(1, b"spk1", 100).unwrap();
        tx.put_signed_prekey(2, b"spk2", 200).unwrap();
        tx.put_signed_prekey(3, b"spk3", 300).unwrap();
        for id in [5, 3, 9, 1] {
            tx.put_one_time_prekey(id, format!("otk{id}").as_bytes())
                .unwrap();
        }
        tx.mark_uploaded(&[3]).unwrap();
        tx.put_group(b"g2", b"group2").unwrap();
        tx.put_group(b"g1", b"group1").unwrap();
        let s1 = tx.push_draft(b"m1", b"draft1", 1).unwrap();
        let s2 = tx.push_draft(b"m2", b"draft2", 2).unwrap();
        assert!(s2 > s1);
        tx.set_ready(s1, &[b"r0".to_vec(), b"r1".to_vec()]).unwrap();
        tx.push_read(&bob, b"x1").unwrap();
        tx.push_read(&alice, b"y1").unwrap();
        tx.push_read(&bob, b"x2").unwrap();
        tx.mark_processed(&bob, b"p1", 5).unwrap();
        tx.put_message(b"h1", 1).unwrap();
        tx.put_message(b"h2", 2).unwrap();
        assert!(tx.put_tick(b"m1", &alice, Tick::Queued, 1).unwrap());
        assert!(
            tx.put_tick(b"m1", &bob, Tick::Receipt(ReceiptKind::Read), 9)
                .unwrap()
        );
        assert!(
            tx.put_tick(b"m1", &bob, Tick::Receipt(ReceiptKind::Delivered), 8)
                .unwrap()
        );
        assert!(
            !tx.put_tick(b"m1", &bob, Tick::Receipt(ReceiptKind::Read), 10)
                .unwrap()
        );
        tx.commit().unwrap();
    }
    {
        // Rolled back: none of this stays.
        let tx = store.begin().unwrap();
        tx.set_meta("k", b"changed").unwrap();
        tx.forget_device(&bob).unwrap();
        tx.push_draft(b"m3", b"draft3", 3).unwrap();
        drop(tx);
    }
    let tx = store.begin().unwrap();
    seen.push(format!("{:?}", tx.meta("k").unwrap()));
    seen.push(format!("{:?}", tx.meta("absent").unwrap()));
    seen.push(format!("{:?}", tx.devices_of("alice").unwrap()));
    seen.push(format!("{:?}", tx.device_key(&bob).unwrap()));
    seen.push(format!("{:?}", tx.previous_sessions(&alice).unwrap()));
    tx.forget_device(&bob).unwrap();
    seen.push(format!(
        "{:?} {:?} {:?}",
        tx.device_key(&bob).unwrap(),
        tx.session(&bob).unwrap(),
        tx.previous_sessions(&bob).unwrap()
    ));
    seen.push(format!("{:?}", tx.session(&alice).unwrap()));
    tx.prune_signed_prekeys(250, [1, 1]).unwrap();
    seen.push(format!(
        "{:?}",
        [1, 2, 3].map(|id| tx.signed_prekey(id).unwrap())
    ));
    seen.push(format!("{:?}", tx.unuploaded_prekeys(2).unwrap()));
    tx.delete_one_time_prekey(1).unwrap();
    seen.push(format!(
        "{:?} {:?}",
        tx.one_time_prekey(1).unwrap(),
        tx.one_time_prekey(9).unwrap()
    ));
    // KEM prekeys: one-time ones as one-time prekeys, last-resort ones as signed prekeys,
    // and the uses recorded for last-resort ones, deleted with their key.
    for id in [4, 2, 8] {
        tx.put_kem_prekey(id, format!("kem{id}").as_bytes())
            .unwrap();
    }
    tx.mark_kem_uploaded(&[2, 4]).unwrap();
    seen.push(format!("{:?}", tx.unuploaded_kem_prekeys(5).unwrap()));
    tx.set_kem_stock(1, 50).unwrap();
    seen.push(format!(
        "{} {:?} {:?}",
        tx.prune_kem_handed_out(49).unwrap(),
        tx.kem_prekey(2).unwrap(),
        tx.kem_prekey(4).unwrap()
    ));
    seen.push(format!("{}", tx.prune_kem_handed_out(50).unwrap()));
    tx.delete_kem_prekey(8).unwrap();
    seen.push(format!(
        "{:?} {:?} {:?}",
        tx.kem_prekey(2).unwrap(),
        tx.kem_prekey(4).unwrap(),
        tx.kem_prekey(8).unwrap()
    ));
    for (id, at) in [(1 << 31 | 1, 100), (1 << 31 | 2, 200), (1 << 31 | 3, 300)] {
        tx.put_last_resort_kem_prekey(id, format!("lr{id}").as_bytes(), at)
            .unwrap();
        tx.record_kem_prekey_use(id, 7, b"base").unwrap();
    }
    tx.record_kem_prekey_use(1 << 31 | 3, 7, b"base").unwrap();
    tx.prune_last_resort_kem_prekeys(250, [1 << 31 | 3, 1 << 31 | 3])
        .unwrap();
    seen.push(format!(
        "{:?} {:?} {} {} {} {}",
        tx.last_resort_kem_prekey(1 << 31 | 1).unwrap(),
        tx.last_resort_kem_prekey(1 << 31 | 3).unwrap(),
        tx.kem_prekey_used(1 << 31 | 1, 7, b"base").unwrap(),
        tx.kem_prekey_used(1 << 31 | 3, 7, b"base").unwrap(),
        tx.kem_prekey_used(1 << 31 | 3, 8, b"base").unwrap(),
        tx.kem_prekey_used(1 << 31 | 3, 7, b"other").unwrap()
    ));
    let mut groups = tx.group_ids().unwrap();
    groups.sort();
    seen.push(format!("{groups:?} {:?}", tx.group(b"g1").unwrap()));
    let (seq, mid, draft) = tx.next_outbox(0).unwrap().unwrap();
    seen.push(format!("{mid:?} {draft:?} {}", tx.outbox_len().unwrap()));
    seen.push(format!("{:?}", tx.next_ready(seq, -1).unwrap()));
    tx.done_ready(seq, 0).unwrap();
    seen.push(format!("{:?}", tx.next_ready(seq, -1).unwrap()));
    // A stale device list: the envelopes left go and the kept draft comes back, once.
    assert!(tx.restore_draft(seq).unwrap());
    let (again, _, draft) = tx.next_outbox(0).unwrap().unwrap();
    assert_eq!((again, draft.as_deref()), (seq, Some(&b"draft1"[..])));
    assert_eq!(tx.next_ready(seq, -1).unwrap(), None);
    assert!(!tx.restore_draft(seq).unwrap(), "the draft is out again");
    tx.set_ready(seq, &[b"r2".to_vec()]).unwrap();
    seen.push(format!("{:?}", tx.next_outbox(0).unwrap()));
    seen.push(format!("{:?}", tx.next_ready(seq, -1).unwrap()));
    // An entry never encrypted keeps no draft aside.
    let (s2, _, _) = tx.next_outbox(seq).unwrap().unwrap();
    assert!(!tx.restore_draft(s2).unwrap());
    tx.done_outbox(seq).unwrap();
    let (_, mid, draft) = tx.next_outbox(0).unwrap().unwrap();
    seen.push(format!("{mid:?} {draft:?} {}", tx.outbox_len().unwrap()));
    let (ids, from, mids) = tx.pending_reads(10).unwrap().unwrap();
    seen.push(format!("{from} {mids:?} {}", ids.len()));
    tx.done_reads(&ids).unwrap();
    let (ids, from, mids) = tx.pending_reads(10).unwrap().unwrap();
    seen.push(format!("{from} {mids:?} {}", ids.len()));
    tx.done_reads(&ids).unwrap();
    seen.push(format!("{:?}", tx.pending_reads(10).unwrap().is_none()));
    seen.push(format!(
        "{} {}",
        tx.processed(&bob, b"p1").unwrap(),
        tx.processed(&alice, b"p1").unwrap()
    ));
    seen.push(format!("{:?}", tx.messages().unwrap()));
    seen.push(format!("{:?}", tx.ticks(b"m1").unwrap()));
    seen.push(format!("{:?}", tx.ticks(b"m2").unwrap()));
    // Held group items (SPEC §16.9): by group, oldest first; by sender; by age.
    tx.hold(b"g1", &alice, b"h1", 10).unwrap();
    tx.hold(b"g2", &bob, b"h2", 20).unwrap();
    tx.hold(b"g1", &bob, b"h3", 30).unwrap();
    tx.hold(b"g1", &alice2, b"h4", 40).unwrap();
    let g1 = tx.held(b"g1").unwrap();
    seen.push(format!(
        "{:?}",
        g1.iter().map(|(_, at, s)| (at, s)).collect::<Vec<_>>()
    ));
    seen.push(format!(
        "{:?} {:?} {:?}",
        tx.oldest_held_from(b"g1", &bob).unwrap(),
        tx.oldest_held_from(b"g2", &alice).unwrap(),
        tx.oldest_held_from(b"g9", &bob).unwrap()
    ));
    let names = |rows: Vec<(i64, Vec<u8>, Address)>| {
        rows.into_iter()
            .map(|(_, g, a)| format!("{}:{a}", String::from_utf8_lossy(&g)))
            .collect::<Vec<_>>()
    };
    seen.push(format!("{:?}", names(tx.held_before(10).unwrap())));
    seen.push(format!("{:?}", names(tx.held_before(31).unwrap())));
    seen.push(format!(
        "{:?}",
        tx.held_senders()
            .unwrap()
            .into_iter()
            .map(|(a, n, _)| format!("{a}={n}"))
            .collect::<Vec<_>>()
    ));
    let (oldest, group) = tx.oldest_held_of(&bob).unwrap().unwrap();
    seen.push(format!("{}", String::from_utf8_lossy(&group)));
    tx.release(oldest).unwrap();
    tx.release(g1[0].0).unwrap();
    seen.push(format!(
        "{} {:?} {:?}",
        tx.held(b"g1").unwrap().len(),
        tx.oldest_held_from(b"g1", &alice).unwrap(),
        tx.oldest_held_of(&alice).unwrap().map(|(_, g)| g)
    ));
    tx.commit().unwrap();
    seen
}

#[test]
fn sqlite_and_memory_stores_answer_alike() {
    let dir = std::env::temp_dir().join(format!("hush-store-contract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("device.db");
    let mut sqlite = SqliteStore::open(&path).unwrap();
    let mut memory = MemoryStore::new();
    let a = script(&mut sqlite);
    let b = script(&mut memory);
    assert_eq!(a, b);
    // Spot checks that the script saw what it wrote, on both.
    assert_eq!(a[0], "Some([118])");
    assert!(
        a[3].contains("107, 101, 121, 45, 98"),
        "bob's key before forgetting"
    );
    assert_eq!(
        a[4], "[[113, 48], [113, 49]]",
        "the newest list of previous sessions"
    );
    assert_eq!(a[5], "None None []");
    let n = a.len();
    assert_eq!(
        a[n - 7..],
        [
            "[(10, [104, 49]), (30, [104, 51]), (40, [104, 52])]",
            "Some(30) None None",
            "[]",
            r#"["g1:alice.1", "g2:bob.7", "g1:bob.7"]"#,
            r#"["alice.1=1", "alice.2=1", "bob.7=2"]"#,
            "g2",
            "2 None None",
        ],
        "held group items"
    );

    // What was committed survives a reopen (a clone of a memory store is the same database).
    drop(sqlite);
    let mut sqlite = SqliteStore::open(&path).unwrap();
    let mut reopened = memory.clone();
    for store in [&mut sqlite as &mut dyn Store, &mut reopened] {
        let tx = store.begin().unwrap();
        assert_eq!(tx.meta("k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(tx.outbox_len().unwrap(), 1);
        assert_eq!(tx.device_key(&Address::new("bob", 7)).unwrap(), None);
    }
}

#[test]
fn a_record_that_opens_but_does_not_decode_is_corrupt_not_sealed() {
    use hush_client::{Client, ClientConfig, ClientError};
    use hush_crypto::StorageKey;
    let key = [4u8; 32];
    let config = || {
        ClientConfig::new(
            "ws://127.0.0.1:9",
            std::path::PathBuf::from("unused.db"),
            StorageKey::from_bytes(key),
            "carol",
            1,
        )
    };
    let mut disk = MemoryStore::new();
    let (client, _events) = Client::open_with_store(config(), disk.clone()).unwrap();
    assert!(client.groups().unwrap().is_empty());
    drop(client);
    // A group record sealed under the right key and label, holding bytes that are not a
    // GroupRecord.
    let sealed = StorageKey::from_bytes(key)
        .seal(
            hush_crypto::labels::client_record::GROUP,
            &[0xff, 0xff, 0xff],
            &mut rand::rng(),
        )
        .unwrap();
    let tx = disk.begin().unwrap();
    tx.put_group(&[7; 32], &sealed).unwrap();
    tx.commit().unwrap();
    let (client, _events) = Client::open_with_store(config(), disk.clone()).unwrap();
    assert!(matches!(client.groups(), Err(ClientError::Corrupt)));
    // Under another label it does not open at all: that one is Sealed.
    let wrong = StorageKey::from_bytes(key)
        .seal(
            hush_crypto::labels::client_record::DRAFT,
            b"x",
            &mut rand::rng(),
        )
        .unwrap();
    let tx = disk.begin().unwrap();
    tx.put_group(&[7; 32], &wrong).unwrap();
    tx.commit().unwrap();
    assert!(matches!(client.groups(), Err(ClientError::Sealed)));
}

#[test]
fn bad_relay_urls_are_typed_errors() {
    use hush_client::{Client, ClientConfig, ClientError, UrlError};
    use hush_crypto::StorageKey;
    for (url, want) in [
        ("http://relay:7800", "Scheme"),
        ("ws://relay:port", "Port"),
        ("ws://:7800", "NoHost"),
    ] {
        let config = ClientConfig::new(
            url,
            std::path::PathBuf::from("unused.db"),
            StorageKey::from_bytes([1; 32]),
            "u",
            1,
        );
        let Err(ClientError::Url(e)) = Client::open_with_store(config, MemoryStore::new()) else {
            panic!("{url} was accepted");
        };
        assert_eq!(format!("{e:?}"), want, "{url}");
        assert!(matches!(
            e,
            UrlError::Scheme | UrlError::Port | UrlError::NoHost
        ));
    }
}
