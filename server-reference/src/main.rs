//! `hush-relay`: runs the reference relay. See [`hush_relay::cli`] for the settings.

use std::process::ExitCode;

use clap::Parser;
use hush_relay::cli::RelayArgs;

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
