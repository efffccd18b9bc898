//! `hush bot --script FILE`: a chatbot from a rules file, with no Rust to write. A bot is an
//! ordinary client: it answers each text (one-to-one or in a group) with the first rule
//! that matches, marks what it answered as read, and answers each message exactly once,
//! across its own restarts and the relay's (replies have ids derived from the message they
//! answer, SPEC §16.2, so a reply queued before a crash is not queued again).
//!
//! The rules file, one rule per line, first match wins:
//!
//! ```text
//! # comment
//! menu      => 1) status ORDER  2) echo TEXT  3) catalog
//! status *  => Order {rest}: shipped, arriving tomorrow.
//! echo *    => {rest}
//! catalog   => file catalog.txt text/plain
//! *         => Sorry, I did not get that. Send "menu".
//! ```
//!
//! A pattern is words, matched against the message's words without regard to case or
//! spacing; a final `*` matches one or more further words, kept as `{rest}`; `*` alone
//! matches any message (an attachment included). An answer is text (`{rest}` replaced,
//! `\n` for a new line), or `file PATH [MEDIA-TYPE]` to send a file (PATH relative to the
//! rules file; the media type defaults to `application/octet-stream`). An answer longer
//! than a text may be (64 KiB) is cut.
//!
//! Run a bot on one device of its user: each device answers what it sees, so two devices of
//! a bot would each answer (with the same reply id, SPEC §16.2, but from two addresses).

use std::path::{Path, PathBuf};

use hush_client::{Body, Client, Event, Message};

use crate::chat::DeviceArgs;

/// Settings of `hush bot`.
#[derive(clap::Args, Debug)]
pub(crate) struct BotArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The rules file (see `hush bot --help` and the README).
    #[arg(long)]
    script: PathBuf,
}

/// Longest rules file read.
pub(crate) const MAX_SCRIPT_BYTES: u64 = 1024 * 1024;

/// What a rule answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Text, with `{rest}` to fill.
    Text(String),
    /// A file to send: its path and media type.
    File(PathBuf, String),
}

/// One rule: the words to match (lowercase), whether a rest follows, and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    words: Vec<String>,
    rest: bool,
    answer: Answer,
}

/// A rules file that could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScriptError {
    /// A line without `=>`, with an empty pattern or answer, or a `*` before the end.
    Line { line: usize, reason: &'static str },
    /// No rules.
    Empty,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line { line, reason } => write!(f, "line {line}: {reason}"),
            Self::Empty => f.write_str("no rules"),
        }
    }
}

/// Parses a rules file; `base` is where file paths are relative to.
pub(crate) fn parse(text: &str, base: &Path) -> Result<Vec<Rule>, ScriptError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason| ScriptError::Line {
            line: i + 1,
            reason,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (pattern, answer) = line.split_once("=>").ok_or(err("no `=>`"))?;
        let (pattern, answer) = (pattern.trim(), answer.trim());
        if pattern.is_empty() {
            return Err(err("empty pattern"));
        }
        if answer.is_empty() {
            return Err(err("empty answer"));
        }
        let mut words: Vec<String> = pattern.split_whitespace().map(str::to_lowercase).collect();
        let rest = words.last().is_some_and(|w| w == "*");
        if rest {
            words.pop();
        }
        if words.iter().any(|w| w.contains('*')) {
            return Err(err("`*` only as the last word"));
        }
        if answer == "file" {
            return Err(err("`file` without a path"));
        }
        let answer = match answer.strip_prefix("file ") {
            Some(spec) => {
                let mut parts = spec.split_whitespace();
                let path = parts.next().ok_or(err("`file` without a path"))?;
                let media = parts.next().unwrap_or("application/octet-stream");
                if parts.next().is_some() {
                    return Err(err("`file PATH [MEDIA-TYPE]` takes at most two words"));
                }
                Answer::File(base.join(path), media.to_string())
            }
            None => Answer::Text(answer.replace("\\n", "\n")),
        };
        rules.push(Rule {
            words,
            rest,
            answer,
        });
    }
    if rules.is_empty() {
        return Err(ScriptError::Empty);
    }
    Ok(rules)
}

/// The answer of the first rule matching `text` (`None` for an attachment), with `{rest}`
/// filled.
pub(crate) fn answer(rules: &[Rule], text: Option<&str>) -> Option<Answer> {
    let said: Vec<&str> = text.map_or(Vec::new(), |t| t.split_whitespace().collect());
    rules.iter().find_map(|r| {
        if r.words.is_empty() && r.rest {
            // `*` alone: anything.
            let rest = said.join(" ");
            return Some(fill(&r.answer, &rest));
        }
        text?;
        let n = r.words.len();
        let head_matches = said.len() >= n
            && said[..n]
                .iter()
                .zip(&r.words)
                .all(|(s, w)| s.to_lowercase() == *w);
        let fits = if r.rest {
            said.len() > n
        } else {
            said.len() == n
        };
        (head_matches && fits).then(|| fill(&r.answer, &said[n..].join(" ")))
    })
}

/// An answer cut to [`MAX_TEXT`](hush_client::MAX_TEXT) bytes, at a character boundary
/// (`{rest}` repeats what the asker sent, which may be that long already).
fn fit(mut t: String) -> String {
    if t.len() > hush_client::MAX_TEXT {
        let mut end = hush_client::MAX_TEXT;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    t
}

fn fill(a: &Answer, rest: &str) -> Answer {
    match a {
        Answer::Text(t) => Answer::Text(t.replace("{rest}", rest)),
        file @ Answer::File(..) => file.clone(),
    }
}

/// Answers `m` if it is another user's message this device has not answered yet. An
/// error is about this message alone: the bot reports it and goes on.
async fn handle(client: &Client, rules: &[Rule], m: &Message) -> Result<(), String> {
    if m.outgoing || client.replied(m).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let text = match &m.body {
        Body::Text(t) => Some(t.as_str()),
        Body::Attachment(_) => None,
    };
    let Some(a) = answer(rules, text) else {
        return Ok(());
    };
    let body = match a {
        Answer::Text(t) => Body::Text(fit(t)),
        Answer::File(path, media) => match client.upload_file(&path, &media, |_| {}).await {
            Ok(att) => Body::Attachment(att),
            Err(e) => {
                // The reason is for the bot's operator, not for whoever asked.
                eprintln!("hush bot: {}: {e}", path.display());
                Body::Text("Sorry, that file is not available.".into())
            }
        },
    };
    if let Some(id) = client.reply(m, body).map_err(|e| e.to_string())? {
        client
            .mark_read(&m.from, &[m.id])
            .map_err(|e| e.to_string())?;
        println!(
            "answered {} from {} with {}",
            hex::encode(&m.id[..4]),
            m.from,
            hex::encode(&id[..4])
        );
    }
    Ok(())
}

/// One message the bot could not answer does not stop it (or it would stop again at every
/// start, on the same message).
fn skip_on_error(r: Result<(), String>) {
    if let Err(e) = r {
        eprintln!("hush bot: a message was not answered: {e}");
    }
}

pub(crate) async fn run(args: BotArgs) -> Result<(), String> {
    let script = &args.script;
    let size = std::fs::metadata(script)
        .map_err(|e| format!("{}: {e}", script.display()))?
        .len();
    if size > MAX_SCRIPT_BYTES {
        return Err(format!(
            "{}: over {MAX_SCRIPT_BYTES} bytes",
            script.display()
        ));
    }
    let text = std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let base = script.parent().unwrap_or(Path::new("."));
    let rules = parse(&text, base).map_err(|e| format!("{}: {e}", script.display()))?;
    let (client, mut events) = crate::chat::open(args.device)?;
    println!(
        "hush bot: {} with {} rules, identity key {}",
        client.address(),
        rules.len(),
        hex::encode(client.identity_key().as_bytes())
    );
    client.start();
    // What came while the bot was away, or between a message and its answer.
    for m in client.messages().map_err(|e| e.to_string())? {
        skip_on_error(handle(&client, &rules, &m).await);
    }
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(Event::Message(m)) => skip_on_error(handle(&client, &rules, &m).await),
                Some(Event::Connected { .. }) => println!("connected"),
                Some(_) => {}
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "# a shop\n\
        menu => 1) status ORDER 2) echo TEXT\\n3) catalog\n\
        \n\
        status * => Order {rest}: shipped.\n\
        Echo * => {rest}\n\
        catalog => file catalog.txt text/plain\n\
        * => Say \"menu\".\n";

    fn text(a: Option<Answer>) -> String {
        match a {
            Some(Answer::Text(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let rules = parse(RULES, Path::new("/shop")).expect("rules");
        assert_eq!(rules.len(), 5);
        let say = |t: &str| text(answer(&rules, Some(t)));
        assert_eq!(say("  MENU "), "1) status ORDER 2) echo TEXT\n3) catalog");
        assert_eq!(say("status  A-17"), "Order A-17: shipped.");
        assert_eq!(say("echo hello   world"), "hello world");
        // `*` at the end needs at least one more word; no more than the pattern otherwise.
        assert_eq!(say("status"), "Say \"menu\".");
        assert_eq!(say("menu please"), "Say \"menu\".");
        assert_eq!(say(""), "Say \"menu\".");
        assert_eq!(
            answer(&rules, Some("catalog")),
            Some(Answer::File(
                PathBuf::from("/shop/catalog.txt"),
                "text/plain".into()
            ))
        );
        // An attachment meets only `*` alone.
        assert_eq!(text(answer(&rules, None)), "Say \"menu\".");
        let no_default = parse("menu => m", Path::new(".")).expect("rules");
        assert_eq!(answer(&no_default, Some("hi")), None);
        assert_eq!(answer(&no_default, None), None);
    }

    #[test]
    fn an_echo_of_the_longest_text_still_fits() {
        let rules = parse("echo * => You said: {rest}", Path::new(".")).expect("rules");
        let long = format!("echo {}", "é".repeat(hush_client::MAX_TEXT / 2));
        let Some(Answer::Text(t)) = answer(&rules, Some(&long)) else {
            panic!("an answer");
        };
        let t = fit(t);
        assert!(t.len() <= hush_client::MAX_TEXT && t.len() > hush_client::MAX_TEXT - 4);
        assert!(t.starts_with("You said: éé"));
    }

    #[test]
    fn bad_rules_say_which_line() {
        let bad = |t: &str| parse(t, Path::new(".")).expect_err("refused");
        assert_eq!(
            bad("menu => m\nhello"),
            ScriptError::Line {
                line: 2,
                reason: "no `=>`"
            }
        );
        assert!(matches!(bad(" => x"), ScriptError::Line { line: 1, .. }));
        assert!(matches!(bad("a =>  "), ScriptError::Line { line: 1, .. }));
        assert!(matches!(
            bad("a * b => x"),
            ScriptError::Line { line: 1, .. }
        ));
        assert!(matches!(
            bad("a => file"),
            ScriptError::Line { line: 1, .. }
        ));
        assert!(matches!(
            bad("a => file x y z"),
            ScriptError::Line { line: 1, .. }
        ));
        assert_eq!(bad("# nothing\n\n"), ScriptError::Empty);
    }
}
