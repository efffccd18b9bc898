//! Replays every checked-in fuzz corpus file (`fuzz/corpus/TARGET/*`) through its target
//! under the stable test suite, plus a few generated inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn every_corpus_file_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in hush_fuzz_targets::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no corpus for {name}");
        total += n;
    }
    println!("replayed {total} corpus files");
}

#[test]
fn generated_inputs() {
    for seed in 0..40u8 {
        let input: Vec<u8> = (0..200u32)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        for (_, target) in hush_fuzz_targets::TARGETS {
            target(&input);
        }
    }
}
