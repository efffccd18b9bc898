//! The operator's registration check: before a new user id is claimed, the relay asks an
//! HTTP endpoint of the operator's (`--registration-hook`), so a deployment can require a
//! phone or e-mail verification code (carried in the registration token) or anything else.
//! It fails closed: no answer, or anything but `2xx`, refuses the registration.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Time allowed for the hook's answer, connection included.
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest status line read from the hook.
const MAX_STATUS_LINE: u64 = 1024;

/// A parsed `http://host:port/path` hook address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookUrl {
    host: String,
    port: u16,
    path: String,
}

impl HookUrl {
    /// Parses `http://host[:port][/path]` (plain HTTP: run the check beside the relay, or
    /// behind a local TLS-terminating proxy).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("the registration hook must be an http:// URL")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "bad port in the hook URL")?),
            None => (authority, 80),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err("bad host in the hook URL".into());
        }
        let path = if path.is_empty() { "/" } else { path };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("bad path in the hook URL".into());
        }
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// What the hook is told of a registration.
pub(crate) struct Claim<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) device_id: u32,
    pub(crate) identity_key: &'a [u8],
    pub(crate) token: &'a [u8],
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asks the hook whether `claim` may register: `Ok(true)` on a `2xx` answer, `Ok(false)` on
/// any other status, `Err` when there is no answer in time.
pub(crate) async fn allows(hook: &HookUrl, claim: &Claim<'_>) -> Result<bool, std::io::Error> {
    // The user id is checked (SPEC §14.1: a-z, 0-9, '.', '_', '-'): nothing to escape.
    let body = format!(
        "{{\"user_id\":\"{}\",\"device_id\":{},\"identity_key\":\"{}\",\"token\":\"{}\"}}",
        claim.user_id,
        claim.device_id,
        hex(claim.identity_key),
        hex(claim.token)
    );
    let ask = async {
        let mut s = tokio::net::TcpStream::connect((hook.host.as_str(), hook.port)).await?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            hook.path,
            hook.host,
            hook.port,
            body.len()
        );
        s.write_all(request.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(s)
            .take(MAX_STATUS_LINE)
            .read_line(&mut line)
            .await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status from the hook"))?;
        Ok::<_, std::io::Error>((200..300).contains(&status))
    };
    tokio::time::timeout(HOOK_TIMEOUT, ask)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::HookUrl;

    #[test]
    fn hook_urls() {
        let u = HookUrl::parse("http://127.0.0.1:9000/check").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9000, "/check")
        );
        let u = HookUrl::parse("http://verify.internal").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://x:port/",
            "http://u@x/",
            "http://x/a b",
        ] {
            assert!(HookUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
