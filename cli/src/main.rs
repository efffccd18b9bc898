//! `hush`: the reference relay, the end-to-end demo, and a line-based chat client.
//!
//! ```text
//! hush demo                      # the whole system on loopback, with a transcript
//! hush relay --db relay.db       # the reference relay (same flags as hush-relay)
//! hush chat --user alice         # chat through a relay, one line at a time
//! hush bot --user shop --script rules.txt   # a chatbot from a rules file
//! ```

mod bot;
mod chat;
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// As in `hush-relay`: the relay spends far less CPU on allocation with mimalloc than with
/// glibc's allocator (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hush: end-to-end encrypted messaging.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the reference relay (embedded SQLite by default).
    Relay(Box<hush_relay::cli::RelayArgs>),
    /// Start a relay on a free loopback port and run Alice, Bob, Carol and Dave through
    /// every feature, printing what each side saw. Exits non-zero if any step fails.
    Demo(demo::DemoArgs),
    /// A line-based chat client (type /help).
    Chat(chat::ChatArgs),
    /// A chatbot answering from a rules file, each message exactly once, across restarts.
    Bot(bot::BotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hush: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    runtime.block_on(async move {
        match cli.command {
            Command::Relay(args) => hush_relay::cli::run(*args).await,
            Command::Demo(args) => match demo::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("\nhush demo FAILED: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Chat(args) => match chat::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hush chat: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Bot(args) => match bot::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hush bot: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn parsed_command_lines_print_no_token_and_no_database_password() {
        for line in [
            &[
                "hush",
                "chat",
                "--user",
                "a",
                "--registration-token",
                "tok-3141",
            ][..],
            &[
                "hush",
                "relay",
                "--registration-token",
                "tok-3141",
                "--postgres",
                "postgres://u:pw-2718@127.0.0.1/x",
            ],
        ] {
            let cli = Cli::try_parse_from(line).unwrap();
            let printed = format!("{cli:?}");
            assert!(printed.contains("<redacted>"), "{printed}");
            assert!(
                !printed.contains("tok-3141") && !printed.contains("pw-2718"),
                "{printed}"
            );
        }
    }
}
