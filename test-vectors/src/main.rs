//! `hush-vectors generate|verify [DIR]`: writes or checks the known-answer vectors.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let dir = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors"),
        PathBuf::from,
    );
    match command.as_str() {
        "generate" => match hush_test_vectors::generate(&dir) {
            Ok(()) => {
                println!(
                    "wrote {} files to {}",
                    hush_test_vectors::FILES.len(),
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hush-vectors: {e}");
                ExitCode::FAILURE
            }
        },
        "verify" => match hush_test_vectors::verify(&dir) {
            Ok(report) => {
                for f in &report.failures {
                    println!("FAILED: {f}");
                }
                println!("{} passed, {} failed", report.passed, report.failed);
                if report.failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("hush-vectors: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: hush-vectors generate|verify [DIR]");
            ExitCode::from(2)
        }
    }
}
