//! `hush-relay`: runs the reference relay. See [`hush_relay::cli`] for the settings.

use std::process::ExitCode;

use clap::Parser;
use hush_relay::cli::RelayArgs;

/// The relay allocates and frees many small buffers per envelope on several threads, where
/// glibc's allocator took about an eighth of the CPU under load (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The hush reference relay (embedded SQLite).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    relay: RelayArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    hush_relay::cli::run(Cli::parse().relay).await
}
