//! Helpers shared by the end-to-end and cluster tests: child processes, relays, clients.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hush_client::{Body, Client, ClientConfig, Event, Message};
use hush_crypto::StorageKey;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn hush() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hush"))
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hush-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process whose stdout lines arrive on a channel; killed (-9) on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with_stderr(cmd, Stdio::null())
    }

    /// Like [`Proc::spawn`], with the child's stderr (its logs) going to `stderr`.
    pub fn spawn_with_stderr(mut cmd: Command, stderr: impl Into<Stdio>) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stdin,
        }
    }

    /// The first line (after any earlier ones) containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?}"),
            }
        }
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hush relay` on `listen` (port 0 for any), its database in `dir`. Returns it and its
/// address.
pub fn relay(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = hush();
    cmd.args(["relay", "--listen", listen, "--db"])
        .arg(dir.join("relay.db"))
        .arg("--blob-dir")
        .arg(dir.join("blobs"))
        .args(extra);
    let p = Proc::spawn(cmd);
    let line = p.wait_for("listening on");
    let addr = line.rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

pub fn chat(dir: &Path, addr: &str, user: &str, key: &str) -> Proc {
    let mut cmd = hush();
    cmd.args([
        "chat",
        "--relay",
        &format!("ws://{addr}"),
        "--user",
        user,
        "--data",
    ])
    .arg(dir.join(user))
    .env("HUSH_STORAGE_KEY", key);
    Proc::spawn(cmd)
}

pub struct Dev {
    pub client: Client,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

pub fn open(
    dir: &Path,
    addr: &str,
    user: &str,
    device: u32,
    key: [u8; 32],
    tweak: impl FnOnce(&mut ClientConfig),
) -> Dev {
    let mut config = ClientConfig::new(
        format!("ws://{addr}"),
        dir.join(format!("{user}-{device}.db")),
        StorageKey::from_bytes(key),
        user,
        device,
    );
    config.poll_interval = Duration::from_millis(300);
    tweak(&mut config);
    let (client, events) = Client::open(config).unwrap();
    Dev { client, events }
}

impl Dev {
    pub async fn online(&self) {
        self.client.start();
        self.client.wait_connected(WAIT).await.unwrap();
    }

    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("client gone");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    }

    pub async fn message(&mut self) -> Message {
        self.expect("a message", |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Every message arriving within `quiet` of the previous one.
    pub async fn drain_messages(&mut self, quiet: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(quiet, self.events.recv()).await {
            if let Event::Message(m) = e {
                out.push(m);
            }
        }
        out
    }
}

pub fn text(m: &Message) -> &str {
    match &m.body {
        Body::Text(t) => t,
        Body::Attachment(_) => "<attachment>",
    }
}
