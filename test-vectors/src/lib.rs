//! # hush-test-vectors
//!
//! Generates the known-answer vectors in `test-vectors/vectors/` from fixed seeds with the
//! real crates, and verifies vector files against the real crates: every positive entry is
//! recomputed from its inputs, every negative entry must be refused with its stated error
//! class, leaving state unchanged. The file format is documented in `test-vectors/README.md`.
//!
//! ```no_run
//! let dir = std::path::Path::new("test-vectors/vectors");
//! hush_test_vectors::generate(dir)?;
//! let report = hush_test_vectors::verify(dir)?;
//! assert_eq!(report.failed, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod attachment;
mod content;
mod franking;
mod group;
mod pq_ratchet;
mod pqxdh;
mod session;
mod simple;
mod util;
mod wire;

use std::path::Path;

pub use util::{Report, VectorError};

/// The vector files, in the order they are written and checked.
pub const FILES: [&str; 12] = [
    "identity.json",
    "kdf.json",
    "x3dh.json",
    "pqxdh.json",
    "seal.json",
    "wire.json",
    "session.json",
    "group.json",
    "attachment.json",
    "pq_ratchet.json",
    "franking.json",
    "content.json",
];

/// Writes every vector file into `dir` (deterministic: the same bytes every time).
pub fn generate(dir: &Path) -> Result<(), VectorError> {
    std::fs::create_dir_all(dir)?;
    let files = [
        simple::identity(),
        simple::kdf(),
        simple::x3dh(),
        pqxdh::generate()?,
        simple::seal(),
        simple::wire()?,
        session::generate()?,
        group::generate()?,
        attachment::generate()?,
        pq_ratchet::generate()?,
        franking::generate(),
        content::generate(),
    ];
    for (name, value) in FILES.iter().zip(files) {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Checks every vector file in `dir` against the real crates.
pub fn verify(dir: &Path) -> Result<Report, VectorError> {
    let mut report = Report::default();
    for name in FILES {
        let text = std::fs::read_to_string(dir.join(name))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        let mut file = Report::default();
        let result = match name {
            "identity.json" => simple::verify_identity(&value, &mut file),
            "kdf.json" => simple::verify_kdf(&value, &mut file),
            "x3dh.json" => simple::verify_x3dh(&value, &mut file),
            "pqxdh.json" => pqxdh::verify(&value, &mut file),
            "seal.json" => simple::verify_seal(&value, &mut file),
            "wire.json" => simple::verify_wire(&value, &mut file),
            "session.json" => session::verify(&value, &mut file),
            "group.json" => group::verify(&value, &mut file),
            "pq_ratchet.json" => pq_ratchet::verify(&value, &mut file),
            "franking.json" => franking::verify(&value, &mut file),
            "content.json" => content::verify(&value, &mut file),
            _ => attachment::verify(&value, &mut file),
        };
        if let Err(e) = result {
            file.fail(format!("{name}: {e}"));
        }
        println!(
            "{name}: {} checks passed, {} failed",
            file.passed, file.failed
        );
        report.merge(file);
    }
    Ok(report)
}
