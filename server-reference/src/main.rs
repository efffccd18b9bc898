//! `hush-relay`: runs the reference relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hush_relay::{Config, Relay, SqliteStore};

/// The hush reference relay (embedded SQLite).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HUSH_LISTEN", default_value = "127.0.0.1:7800")]
    listen: std::net::SocketAddr,
    /// SQLite database file (created if absent).
    #[arg(long, env = "HUSH_DB", default_value = "hush-relay.db")]
    db: PathBuf,
    /// The relay's identity in authentication challenges.
    #[arg(long, env = "HUSH_RELAY_ID", default_value = "hush-relay")]
    relay_id: String,
    /// Require this token to register new users.
    #[arg(long, env = "HUSH_REGISTRATION_TOKEN")]
    registration_token: Option<String>,
    /// Most simultaneous connections.
    #[arg(long, env = "HUSH_MAX_CONNECTIONS", default_value_t = 19_000)]
    max_connections: usize,
    /// Directory for attachment blobs.
    #[arg(long, env = "HUSH_BLOB_DIR", default_value = "hush-blobs")]
    blob_dir: PathBuf,
    /// Frames per second allowed per device (burst: twice that).
    #[arg(long, env = "HUSH_DEVICE_RATE", default_value_t = 200)]
    device_rate: u32,
    /// Frames per second allowed per IP address (burst: twice that).
    #[arg(long, env = "HUSH_IP_RATE", default_value_t = 1000)]
    ip_rate: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let store = match SqliteStore::open(&args.db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hush-relay: cannot open {}: {e}", args.db.display());
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        listen: args.listen,
        relay_id: args.relay_id.into_bytes(),
        registration_token: args.registration_token.map(String::into_bytes),
        max_connections: args.max_connections,
        device_rate: hush_relay::RateLimit::per_second(args.device_rate),
        blob_dir: args.blob_dir,
        ip_rate: hush_relay::RateLimit::per_second(args.ip_rate),
        ..Config::default()
    };
    let relay = match Relay::build(config, store).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %relay.local_addr(), "hush-relay listening");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match relay.run(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
