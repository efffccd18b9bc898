//! The published vectors are exactly what the generator produces, the Rust verifier accepts
//! them, and both verifiers notice single-byte changes in a copy.
//!
//! The independent (Python) verifier takes part when `HUSH_INDEPENDENT_VERIFIER` names its
//! `run.sh` (as `.ci/run` does); without it, only the Rust verifier is exercised here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn published() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hush-vectors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn regenerating_gives_byte_identical_files() {
    let dir = scratch("regen");
    hush_test_vectors::generate(&dir).unwrap();
    for name in hush_test_vectors::FILES {
        let fresh = std::fs::read(dir.join(name)).unwrap();
        let committed = std::fs::read(published().join(name)).unwrap();
        assert!(
            fresh == committed,
            "{name} differs from a fresh generation: run `cargo run -p hush-test-vectors --bin hush-vectors -- generate`"
        );
    }
}

#[test]
fn published_vectors_verify() {
    let report = hush_test_vectors::verify(&published()).unwrap();
    assert_eq!(report.failed, 0, "{:#?}", report.failures);
    assert!(report.passed > 200, "only {} checks ran", report.passed);
}

fn independent(dir: &Path) -> Option<bool> {
    let script = std::env::var_os("HUSH_INDEPENDENT_VERIFIER")?;
    let out = Command::new("bash").arg(script).arg(dir).output().unwrap();
    Some(out.status.success())
}

/// One hex digit changed in a value: `(file, a JSON path, what it is)`.
const MUTATIONS: [(&str, &str, &str); 12] = [
    (
        "attachment.json",
        "/cases/5/blob_sha256",
        "an attachment blob digest",
    ),
    ("x3dh.json", "/cases/0/dh2", "an X3DH DH output"),
    ("pqxdh.json", "/cases/0/ss", "a PQXDH KEM shared secret"),
    ("pqxdh.json", "/cases/1/kem_seed", "a KEM prekey seed"),
    (
        "pqxdh.json",
        "/responder_negative/3/wire",
        "a refused PQXDH first message",
    ),
    ("kdf.json", "/root_kdf/1/ck_out", "a root-KDF output"),
    (
        "identity.json",
        "/identities/2/x25519_public",
        "a converted identity key",
    ),
    ("seal.json", "/cases/0/blob", "a sealed blob"),
    (
        "session.json",
        "/transcripts/0/events/0/ciphertext",
        "a session ciphertext",
    ),
    (
        "session.json",
        "/transcripts/0/alice_random/1",
        "a session input key",
    ),
    ("group.json", "/events/1/chain_key", "a group chain key"),
    ("wire.json", "/valid/0/bytes", "a wire encoding"),
];

#[test]
fn single_byte_changes_are_reported_by_both_verifiers() {
    for (i, (file, path, what)) in MUTATIONS.iter().enumerate() {
        let dir = scratch(&format!("mut{i}"));
        for name in hush_test_vectors::FILES {
            std::fs::copy(published().join(name), dir.join(name)).unwrap();
        }
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let slot = value
            .pointer_mut(path)
            .unwrap_or_else(|| panic!("{file}{path} not found"));
        let s = slot.as_str().unwrap().to_string();
        // Change the first hex digit (one byte) to another digit.
        let flipped = if s.starts_with('0') { "1" } else { "0" };
        *slot = serde_json::Value::String(format!("{flipped}{}", &s[1..]));
        std::fs::write(
            dir.join(file),
            serde_json::to_string_pretty(&value).unwrap(),
        )
        .unwrap();

        let report = hush_test_vectors::verify(&dir).unwrap();
        assert!(
            report.failed > 0,
            "the Rust verifier did not notice a change to {what} ({file}{path})"
        );
        if let Some(ok) = independent(&dir) {
            assert!(
                !ok,
                "the independent verifier did not notice a change to {what} ({file}{path})"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// SPEC §12.1 quotes `pqxdh.json`'s first case: its hex blocks are exactly these values of
/// the vector, in this order.
#[test]
fn the_spec_pqxdh_example_is_the_vector() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SPEC.md"))
            .unwrap();
    let start = spec.find("### 12.1 PQXDH example").unwrap();
    let example = &spec[start..start + spec[start..].find("## 13. Groups").unwrap()];
    // Each block follows a line ending in ':' and wraps its hex at 64 digits a line.
    let is_hex = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit());
    let blocks: Vec<String> = example
        .split(":\n")
        .skip(1)
        .map(|b| b.lines().map(str::trim).take_while(|l| is_hex(l)).collect())
        .filter(|b: &String| !b.is_empty())
        .collect();
    let text = std::fs::read_to_string(published().join("pqxdh.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex_of = |k: &str| value["cases"][0][k].as_str().unwrap().to_string();
    let sha = |k: &str| {
        hex::encode(hush_crypto::hash::sha256(&[
            &hex::decode(hex_of(k)).unwrap()
        ]))
    };
    let quoted = vec![
        hex_of("kem_seed"),
        hex_of("kem_public")[..64].to_string(),
        sha("kem_public"),
        hex_of("spk_signed_message"),
        hex_of("spk_signature"),
        hex_of("kem_signature"),
        sha("bundle"),
        hex_of("kem_m"),
        hex_of("dhs_a_private"),
        hex_of("kem_ciphertext")[..64].to_string(),
        sha("kem_ciphertext"),
        hex_of("ss"),
        hex_of("sk"),
        sha("wire"),
    ];
    assert_eq!(blocks, quoted);
}
