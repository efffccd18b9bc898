//! The relay's command line: flags, environment variables and the TOML file, shared by the
//! `hush-relay` binary and `hush relay`.
//!
//! Settings come from, in order of precedence: command-line flags, environment variables
//! (`HUSH_*`), an optional TOML file (`--config`), and the documented defaults of
//! [`Config`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    Config, PgStore, RateLimit, Redacted, Relay, Routing, ShardedPgStore, SqliteStore, Store,
    TlsFiles,
};
use serde::Deserialize;

/// The relay's settings as command-line flags (each also read from a `HUSH_*` environment
/// variable). `hush-relay` and `hush relay` take the same flags.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RelayArgs {
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "HUSH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7800].
    #[arg(long, env = "HUSH_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// SQLite database file, created if absent [default: hush-relay.db].
    #[arg(long, env = "HUSH_DB")]
    pub db: Option<PathBuf>,
    /// The relay's identity in authentication challenges [default: hush-relay].
    #[arg(long, env = "HUSH_RELAY_ID")]
    pub relay_id: Option<String>,
    /// Require this token to register new users [default: none].
    #[arg(long, env = "HUSH_REGISTRATION_TOKEN")]
    pub registration_token: Option<Redacted<String>>,
    /// Most simultaneous connections [default: 19000].
    #[arg(long, env = "HUSH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Ask this http:// endpoint before a new user id is claimed (a 2xx answer allows it)
    /// [default: none].
    #[arg(long, env = "HUSH_REGISTRATION_HOOK")]
    pub registration_hook: Option<String>,
    /// Most devices one user may register, 1 to 1024 [default: 16].
    #[arg(long, env = "HUSH_MAX_DEVICES_PER_USER")]
    pub max_devices_per_user: Option<usize>,
    /// Most abuse reports one user may make in 24 hours [default: 50].
    #[arg(long, env = "HUSH_MAX_REPORTS_PER_DAY")]
    pub max_reports_per_day: Option<u32>,
    /// Print the abuse reports kept in the store (SPEC §17), oldest first, and exit.
    #[arg(long)]
    pub list_reports: bool,
    /// Add this PostgreSQL database as the next shard, with every relay node stopped: move
    /// to it the users it takes from the shards --postgres and --pg-shard name, and exit
    /// (docs/DEPLOYMENT.md, "Adding a shard").
    #[arg(long, value_name = "URL")]
    pub add_shard: Option<Redacted<String>>,
    /// Frames per second allowed per device, burst twice that [default: 200].
    #[arg(long, env = "HUSH_DEVICE_RATE")]
    pub device_rate: Option<u32>,
    /// Frames per second allowed per IP address, burst twice that [default: 1000].
    #[arg(long, env = "HUSH_IP_RATE")]
    pub ip_rate: Option<u32>,
    /// Do not serve the web client at `/`.
    #[arg(long, env = "HUSH_NO_WEB_CLIENT")]
    pub no_web_client: bool,
    /// Directory for attachment blobs [default: hush-blobs].
    #[arg(long, env = "HUSH_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Largest attachment blob in MiB [default: 100].
    #[arg(long, env = "HUSH_MAX_BLOB_MIB")]
    pub max_blob_mib: Option<u64>,
    /// Days an undelivered envelope is kept [default: 30].
    #[arg(long, env = "HUSH_MAILBOX_TTL_DAYS")]
    pub mailbox_ttl_days: Option<u64>,
    /// Serve TLS with this PEM certificate chain (with --tls-key) [default: plain].
    #[arg(long, env = "HUSH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "HUSH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Use PostgreSQL at this URL (e.g. `postgres://user@127.0.0.1/db`) instead of SQLite;
    /// several relay nodes may share it [default: none].
    #[arg(long, env = "HUSH_POSTGRES")]
    pub postgres: Option<Redacted<String>>,
    /// Another PostgreSQL database (shard) for users' state, after --postgres (shard 0);
    /// repeat for more, in the same order on every node (docs/DEPLOYMENT.md, "Sharding")
    /// [default: none].
    #[arg(long = "pg-shard", value_name = "URL")]
    pub pg_shards: Vec<Redacted<String>>,
    /// PostgreSQL schema for the relay's tables, created if absent [default: the
    /// connection's search path].
    #[arg(long, env = "HUSH_PG_SCHEMA")]
    pub pg_schema: Option<String>,
    /// Most PostgreSQL connections this node holds [default: 16].
    #[arg(long, env = "HUSH_PG_POOL")]
    pub pg_pool: Option<usize>,
    /// NATS server for wake-ups between nodes (e.g. `nats://127.0.0.1:4222`) [default: none].
    #[arg(long, env = "HUSH_NATS")]
    pub nats: Option<String>,
    /// NATS subject prefix: one per deployment [default: hush].
    #[arg(long, env = "HUSH_NATS_PREFIX")]
    pub nats_prefix: Option<String>,
    /// Connections also check their mailbox this often, in ms [default: 2000 with
    /// --postgres, never on SQLite].
    #[arg(long, env = "HUSH_POLL_MS")]
    pub poll_ms: Option<u64>,
}

/// The same settings, from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<std::net::SocketAddr>,
    db: Option<PathBuf>,
    relay_id: Option<String>,
    registration_token: Option<Redacted<String>>,
    max_connections: Option<usize>,
    max_devices_per_user: Option<usize>,
    max_reports_per_day: Option<u32>,
    registration_hook: Option<String>,
    device_rate: Option<u32>,
    ip_rate: Option<u32>,
    web_client: Option<bool>,
    blob_dir: Option<PathBuf>,
    max_blob_mib: Option<u64>,
    mailbox_ttl_days: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    postgres: Option<Redacted<String>>,
    pg_shards: Option<Vec<Redacted<String>>>,
    pg_schema: Option<String>,
    pg_pool: Option<usize>,
    nats: Option<String>,
    nats_prefix: Option<String>,
    poll_ms: Option<u64>,
}

/// Where the relay keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite database at this path (the default, `hush-relay.db`).
    Sqlite(PathBuf),
    /// PostgreSQL, shared by every node of a deployment.
    Postgres {
        /// Connection URL (its `Debug` is redacted: it may hold a password).
        url: Redacted<String>,
        /// More shards after `url` (shard 0), in order; empty for one database.
        shards: Vec<Redacted<String>>,
        /// Schema for the tables.
        schema: Option<String>,
        /// Most pooled connections.
        pool: usize,
    },
}

/// Resolves the settings: flags and environment, then the TOML file, then the defaults.
/// Returns the relay configuration and the database path.
pub fn settings(args: RelayArgs) -> Result<(Config, Backend), String> {
    let file: FileSettings = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileSettings::default(),
    };
    let d = Config::default();
    let postgres = args.postgres.or(file.postgres);
    let poll_ms = args
        .poll_ms
        .or(file.poll_ms)
        .or(postgres.as_ref().map(|_| 2000));
    let config = Config {
        nats_url: args.nats.or(file.nats),
        nats_prefix: args
            .nats_prefix
            .or(file.nats_prefix)
            .unwrap_or(d.nats_prefix.clone()),
        poll_interval: poll_ms.map(Duration::from_millis),
        listen: args.listen.or(file.listen).unwrap_or(d.listen),
        relay_id: args
            .relay_id
            .or(file.relay_id)
            .map_or(d.relay_id, String::into_bytes),
        registration_token: args
            .registration_token
            .or(file.registration_token)
            .map(|t| Redacted(t.0.into_bytes())),
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(d.max_connections),
        registration_hook: args
            .registration_hook
            .or(file.registration_hook)
            .map(|u| crate::hook::HookUrl::parse(&u))
            .transpose()?,
        max_devices_per_user: args
            .max_devices_per_user
            .or(file.max_devices_per_user)
            .unwrap_or(d.max_devices_per_user),
        max_reports_per_day: args
            .max_reports_per_day
            .or(file.max_reports_per_day)
            .unwrap_or(d.max_reports_per_day),
        device_rate: args
            .device_rate
            .or(file.device_rate)
            .map_or(d.device_rate, RateLimit::per_second),
        ip_rate: args
            .ip_rate
            .or(file.ip_rate)
            .map_or(d.ip_rate, RateLimit::per_second),
        web_client: !args.no_web_client && file.web_client.unwrap_or(true),
        blob_dir: args.blob_dir.or(file.blob_dir).unwrap_or(d.blob_dir),
        max_blob_bytes: args
            .max_blob_mib
            .or(file.max_blob_mib)
            .map_or(d.max_blob_bytes, |m| m * 1024 * 1024),
        mailbox_ttl: args
            .mailbox_ttl_days
            .or(file.mailbox_ttl_days)
            .map_or(d.mailbox_ttl, |days| Duration::from_secs(days * 86_400)),
        tls: match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together".into()),
        },
        ..d
    };
    config.validate().map_err(|e| e.to_string())?;
    let shards = if args.pg_shards.is_empty() {
        file.pg_shards.unwrap_or_default()
    } else {
        args.pg_shards
    };
    if !shards.is_empty() && postgres.is_none() {
        return Err("pg_shard needs postgres (shard 0)".into());
    }
    let backend = match postgres {
        Some(url) => Backend::Postgres {
            url,
            shards,
            schema: args.pg_schema.or(file.pg_schema),
            pool: args.pg_pool.or(file.pg_pool).unwrap_or(16),
        },
        None => Backend::Sqlite(
            args.db
                .or(file.db)
                .unwrap_or_else(|| PathBuf::from("hush-relay.db")),
        ),
    };
    Ok((config, backend))
}

/// Runs the relay with these settings until Ctrl-C, then drains and stops. Logging is the
/// caller's to set up.
pub async fn run(args: RelayArgs) -> ExitCode {
    let list_reports = args.list_reports;
    let add_shard = args.add_shard.clone();
    let (config, backend) = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            return ExitCode::from(2);
        }
    };
    // Batches by mailbox on one node; shared when nodes share mailboxes (docs/BENCHMARKS.md).
    let routing = if config.nats_url.is_some() {
        Routing::Shared
    } else {
        Routing::ByMailbox
    };
    if add_shard.is_some() && matches!(backend, Backend::Sqlite(_)) {
        eprintln!("hush-relay: --add-shard needs --postgres (shard 0)");
        return ExitCode::from(2);
    }
    match backend {
        Backend::Sqlite(db) => match SqliteStore::open(&db) {
            Ok(store) if list_reports => print_reports(&store).await,
            Ok(store) => serve(config, store).await,
            Err(e) => {
                eprintln!(
                    "hush-relay: cannot open {}: {}",
                    db.display(),
                    crate::store::error_chain(&e)
                );
                ExitCode::FAILURE
            }
        },
        Backend::Postgres {
            url,
            shards,
            schema,
            ..
        } if add_shard.is_some() => {
            let urls: Vec<&str> = std::iter::once(&url)
                .chain(&shards)
                .map(|u| u.as_str())
                .collect();
            let new = add_shard.unwrap_or_default();
            match ShardedPgStore::add_shard(&urls, &new, schema.as_deref()).await {
                Ok(m) => {
                    println!(
                        "shard {} added: {} devices, {} envelopes ({} shared messages), {} receipts and {} other rows moved to it; start every node with it last in the shard list",
                        urls.len(),
                        m.devices,
                        m.envelopes,
                        m.messages,
                        m.receipts,
                        m.other_rows
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "hush-relay: adding a shard: {}",
                        crate::store::error_chain(&e)
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Backend::Postgres {
            url,
            shards,
            schema,
            pool,
        } if !shards.is_empty() => {
            let urls: Vec<&str> = std::iter::once(&url)
                .chain(&shards)
                .map(|u| u.as_str())
                .collect();
            match ShardedPgStore::connect_with(&urls, schema.as_deref(), pool, routing).await {
                Ok(store) if list_reports => print_reports(&store).await,
                Ok(store) => serve(config, store).await,
                Err(e) => {
                    eprintln!("hush-relay: PostgreSQL: {}", crate::store::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Backend::Postgres {
            url, schema, pool, ..
        } => match PgStore::connect_with(&url, schema.as_deref(), pool, routing).await {
            Ok(store) if list_reports => print_reports(&store).await,
            Ok(store) => serve(config, store).await,
            Err(e) => {
                eprintln!("hush-relay: PostgreSQL: {}", crate::store::error_chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// `--list-reports`: one block per kept abuse report, oldest first.
async fn print_reports<S: Store>(store: &S) -> ExitCode {
    match store.reports().await {
        Ok(reports) => {
            for r in &reports {
                let content = reported_text(&r.content);
                println!(
                    "report {} at {} ms: {}.{} reports {}.{} (message stored at {} ms)\n  reason: {}\n  consent: {}\n  message: {}",
                    r.id,
                    r.received_ms,
                    r.reporter.user,
                    r.reporter.device,
                    r.sender.user,
                    r.sender.device,
                    r.server_ms,
                    r.reason,
                    r.consent,
                    content
                );
            }
            println!("{} reports", reports.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hush-relay: {}", crate::store::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// What a reported message says, for the operator: the text of a Content (SPEC §16.2,
/// field 3), "an attachment" (field 4), or the bytes in hex when they are neither.
fn reported_text(content: &[u8]) -> String {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 0;
    let mut last_field = 0;
    let mut text = None;
    while at < content.len() {
        let Some(key) = varint(content, &mut at) else {
            text = None;
            break;
        };
        // Canonical only (fields in increasing order, each once), as clients check before
        // they show a franked message: anything else is shown as bytes.
        if key >> 3 <= last_field {
            text = None;
            break;
        }
        last_field = key >> 3;
        let len = match key & 7 {
            0 => {
                if varint(content, &mut at).is_none() {
                    text = None;
                    break;
                }
                continue;
            }
            2 => match varint(content, &mut at).and_then(|l| usize::try_from(l).ok()) {
                Some(l) if l <= content.len() - at => l,
                _ => {
                    text = None;
                    break;
                }
            },
            _ => {
                text = None;
                break;
            }
        };
        let field = &content[at..at + len];
        at += len;
        match key >> 3 {
            3 => text = std::str::from_utf8(field).ok().map(|t| format!("{t:?}")),
            4 => text = Some("an attachment".into()),
            _ => {}
        }
    }
    text.unwrap_or_else(|| {
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        format!("(not a text) {hex}")
    })
}

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send): both drain in-flight work.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve<S: Store>(config: Config, store: S) -> ExitCode {
    let relay = match Relay::build(config, store).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %relay.local_addr(), "hush-relay listening");
    // One line on stdout, for scripts and tests that start the relay on port 0.
    println!("hush relay listening on {}", relay.local_addr());
    let stop = shutdown_signal();
    match relay.run(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hush-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_messages_show_their_text() {
        // message_id, sent_ms, text "hi \"you\"".
        let mut c = vec![0x0a, 0x10];
        c.extend([7; 16]);
        c.extend([0x10, 0x96, 0x01, 0x1a, 0x08]);
        c.extend(b"hi \"you\"");
        assert_eq!(reported_text(&c), r#""hi \"you\"""#);
        assert_eq!(reported_text(&[0x22, 0x00]), "an attachment");
        assert_eq!(reported_text(&[0x1a, 0x05, 0x61]), "(not a text) 1a0561");
        assert_eq!(
            reported_text(&[0xff; 11]),
            format!("(not a text) {}", "ff".repeat(11))
        );
        // A repeated body (which a client would show as its last value) is not trusted.
        assert_eq!(
            reported_text(&[0x1a, 0x01, 0x61, 0x1a, 0x01, 0x62]),
            "(not a text) 1a01611a0162"
        );
        assert_eq!(
            reported_text(&[0x22, 0x00, 0x1a, 0x01, 0x62]),
            "(not a text) 22001a0162"
        );
    }

    #[test]
    fn debug_output_holds_no_token_and_no_database_password() {
        let dir = std::env::temp_dir().join(format!("hush-relay-redact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "registration_token = \"file-token-1234\"\npostgres = \"postgres://u:file-pw-5678@127.0.0.1/x\"\n",
        )
        .unwrap();
        let from_file = RelayArgs {
            config: Some(file.clone()),
            ..RelayArgs::default()
        };
        let from_flags = RelayArgs {
            registration_token: Some("flag-token-1234".to_string().into()),
            postgres: Some("postgres://u:flag-pw-5678@127.0.0.1/x".to_string().into()),
            ..RelayArgs::default()
        };
        let file_settings: FileSettings =
            toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut printed = vec![format!("{from_flags:?}"), format!("{file_settings:?}")];
        for args in [from_file, from_flags] {
            let (config, backend) = settings(args).unwrap();
            // The values are there, only never printed.
            assert!(
                config
                    .registration_token
                    .as_ref()
                    .is_some_and(|t| t.ends_with(b"-token-1234"))
            );
            let Backend::Postgres { url, .. } = &backend else {
                panic!("not PostgreSQL");
            };
            assert!(url.contains("-pw-5678"));
            printed.push(format!("{config:?}"));
            printed.push(format!("{backend:?}"));
        }
        for text in printed {
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains("-token-1234"), "{text}");
            assert!(!text.contains("-pw-5678"), "{text}");
        }
    }

    #[test]
    fn bounded_settings_are_refused_outside_their_bounds() {
        let with = |f: fn(&mut RelayArgs)| {
            let mut a = RelayArgs::default();
            f(&mut a);
            settings(a)
        };
        // A zero rate used to panic in the limiter; now it is refused at start.
        assert!(with(|a| a.device_rate = Some(0)).is_err());
        assert!(with(|a| a.ip_rate = Some(0)).is_err());
        assert!(with(|a| a.device_rate = Some(1)).is_ok());
        assert!(with(|a| a.max_devices_per_user = Some(0)).is_err());
        assert!(with(|a| a.max_devices_per_user = Some(1)).is_ok());
        let max = hush_relay_protocol::limits::MAX_DEVICES_PER_USER;
        assert_eq!(
            with(|a| a.max_devices_per_user = Some(1024))
                .unwrap()
                .0
                .max_devices_per_user,
            max
        );
        assert!(with(|a| a.max_devices_per_user = Some(1025)).is_err());
        assert_eq!(
            with(|_| {}).unwrap().0.max_devices_per_user,
            Config::default().max_devices_per_user
        );
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("hush-relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nrelay_id = \"from-file\"\nip_rate = 5\n",
        )
        .unwrap();
        let args = RelayArgs {
            config: Some(file.clone()),
            relay_id: Some("from-flag".into()),
            ..RelayArgs::default()
        };
        let (c, db) = settings(args).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.relay_id, b"from-flag");
        assert_eq!(c.ip_rate, RateLimit::per_second(5));
        assert_eq!(c.device_rate, Config::default().device_rate);
        assert_eq!(db, Backend::Sqlite(PathBuf::from("hush-relay.db")));
        std::fs::write(&file, "tls_cert = \"c.pem\"\n").unwrap();
        assert!(
            settings(RelayArgs {
                config: Some(file.clone()),
                ..RelayArgs::default()
            })
            .is_err(),
            "a certificate without a key"
        );
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        assert!(
            settings(RelayArgs {
                config: Some(file),
                ..RelayArgs::default()
            })
            .is_err()
        );
    }
}
