//! People chatting with `examples/cli.rs` as they would in two terminals: each CLI is a child
//! process driven through its stdin and read line by line from its stdout, against a
//! server running in this process on 127.0.0.1:0. Also the `echo_bot` example.
//!
//! The example binaries are the ones `cargo test` builds beside this test (examples are
//! built by default, `--all-features` enables their `client` feature):
//! `target/<profile>/examples/cli`. `cargo test --test cli_chat` alone does not build
//! examples: when one is missing the tests say so and pass without running; when one is
//! older than its source they fail, asking for `cargo build --examples`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chat_engine::RoomId;
use chat_engine::core::auth::DevAuthenticator;
use chat_engine::ws::WsServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(20);

/// The path of an example binary built beside this test, or `None` (and why, printed).
fn example(name: &str) -> Option<PathBuf> {
    // This test runs as target/<profile>/deps/cli_chat-<hash>; examples are in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent()?.parent()?.join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        // `cargo test --test cli_chat` alone does not rebuild examples: never test an old one.
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        if let (Ok(built), Ok(written)) = (modified(&path), modified(&source)) {
            assert!(
                built >= written,
                "{} is older than {}: rebuild it (`cargo build --examples`, \
                 or run `cargo test --workspace --all-features`, which builds the examples)",
                path.display(),
                source.display()
            );
        }
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: the example binary {} is missing. `cargo test --workspace --all-features` \
             builds it; with `--test cli_chat` alone, build it first: \
             `cargo build --examples`",
            path.display()
        );
        None
    }
}

/// A fresh in-memory server on 127.0.0.1:0 (development tokens); its URL. It stops with the
/// test's runtime.
async fn start_server() -> String {
    let engine = chat_engine::memory::engine_builder(Arc::new(DevAuthenticator)).build();
    let server = WsServer::bind("127.0.0.1:0", engine).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr().unwrap());
    tokio::spawn(server.run_until(std::future::pending()));
    url
}

/// A child process in a "terminal": stdin to type into, stdout read line by line. Killed
/// when dropped (a failed test leaves nothing running).
struct Term {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every stdout line read so far.
    seen: Vec<String>,
}

impl Term {
    fn spawn(exe: &PathBuf, name: &str, args: &[&str]) -> Term {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Term {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            seen: Vec::new(),
        }
    }

    /// The CLI of `user` in `room`, once it is ready for input.
    async fn cli(exe: &PathBuf, url: &str, user: &str, room: &str) -> Term {
        let mut term = Term::spawn(exe, user, &["--url", url, "--user", user, "--room", room]);
        term.expect_prefix(&format!("* chatting in {room} as {user}"))
            .await;
        term
    }

    /// The CLI of `user` in a direct chat with `peer`, once it is ready for input.
    async fn direct(exe: &PathBuf, url: &str, user: &str, peer: &str) -> Term {
        let mut term = Term::spawn(exe, user, &["--url", url, "--user", user, "--to", peer]);
        term.expect_prefix(&format!("* chatting with {peer} in "))
            .await;
        term
    }

    /// The next stdout line (`None` at its end), waiting until `deadline`.
    async fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let read = tokio::time::timeout_at(deadline, self.stdout.next_line()).await;
        let line = match read {
            Ok(line) => line.unwrap(),
            Err(_) => self.fail("nothing more in time"),
        };
        if let Some(line) = &line {
            self.seen.push(line.clone());
        }
        line
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}; its stdout so far:\n  {}",
            self.name,
            self.seen.join("\n  ")
        )
    }

    /// Reads until a line for which `pick` holds; returns it.
    async fn expect_where(&mut self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_line(deadline).await {
                Some(line) if pick(&line) => return line,
                Some(_) => {}
                None => self.fail(&format!("stdout ended before {what}")),
            }
        }
    }

    /// Reads until exactly this line.
    async fn expect(&mut self, want: &str) {
        self.expect_where(&format!("{want:?}"), |line| line == want)
            .await;
    }

    /// Reads until a line starting with `prefix`.
    async fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect_where(&format!("a line starting with {prefix:?}"), |line| {
            line.starts_with(prefix)
        })
        .await
    }

    /// The next message line (status lines, `* …`, are skipped).
    async fn next_message(&mut self) -> String {
        self.expect_where("a message", |line| !line.starts_with("* "))
            .await
    }

    /// Types `line` and Enter.
    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// How often this exact line was read.
    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|l| *l == line).count()
    }

    /// Ends input (Ctrl-D), reads the rest of stdout and waits for the exit.
    async fn eof(mut self) -> (ExitStatus, Vec<String>) {
        self.stdin = None;
        self.finish().await
    }

    /// Reads the rest of stdout and waits for the exit.
    async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        while self.next_line(deadline).await.is_some() {}
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => self.fail("did not exit in time"),
        };
        (status, std::mem::take(&mut self.seen))
    }
}

#[tokio::test]
async fn two_people_chat_in_a_room_and_a_latecomer_sees_the_history() {
    let Some(cli) = example("cli") else { return };
    let url = start_server().await;

    let mut alice = Term::cli(&cli, &url, "alice", "general").await;
    let mut bob = Term::cli(&cli, &url, "bob", "general").await;
    alice.expect("* bob joined general").await;

    alice.say("hello bob").await;
    bob.expect("[general] alice: hello bob").await;
    alice.expect("[general] alice: hello bob").await;
    bob.say("hi alice, how are you?").await;
    alice.expect("[general] bob: hi alice, how are you?").await;
    bob.expect("[general] bob: hi alice, how are you?").await;

    // Carol comes later: the history first, then the live chat.
    let mut carol = Term::spawn(
        &cli,
        "carol",
        &["--url", &url, "--user", "carol", "--room", "general"],
    );
    carol.expect_prefix("* chatting in general as carol").await;
    let history: Vec<&str> = carol
        .seen
        .iter()
        .filter(|l| l.starts_with('['))
        .map(String::as_str)
        .collect();
    assert_eq!(
        history,
        [
            "[general] alice: hello bob",
            "[general] bob: hi alice, how are you?",
        ],
        "carol's history"
    );
    bob.expect("* carol joined general").await;
    carol.say("hey both").await;
    alice.expect("[general] carol: hey both").await;
    bob.expect("[general] carol: hey both").await;

    // Bob leaves with Ctrl-D; the others see him go offline. Carol leaves with /quit.
    let (status, _) = bob.eof().await;
    assert!(status.success(), "bob exited with {status}");
    alice.expect("* bob is offline").await;
    carol.say("/quit").await;
    let (status, _) = carol.finish().await;
    assert!(status.success(), "carol exited with {status}");

    let (status, seen) = alice.eof().await;
    assert!(status.success(), "alice exited with {status}");
    for line in [
        "[general] alice: hello bob",
        "[general] bob: hi alice, how are you?",
        "[general] carol: hey both",
    ] {
        let n = seen.iter().filter(|l| *l == line).count();
        assert_eq!(n, 1, "{line:?} shown {n} times to alice:\n{seen:#?}");
    }
}

#[tokio::test]
async fn a_direct_chat_with_to() {
    let Some(cli) = example("cli") else { return };
    let url = start_server().await;

    let mut alice = Term::direct(&cli, &url, "alice", "bob").await;
    let mut bob = Term::direct(&cli, &url, "bob", "alice").await;
    alice.say("psst, bob").await;
    bob.expect("[dm:alice:bob] alice: psst, bob").await;
    alice.expect("[dm:alice:bob] alice: psst, bob").await;
    bob.say("yes?").await;
    alice.expect("[dm:alice:bob] bob: yes?").await;
    bob.expect("[dm:alice:bob] bob: yes?").await;
    assert_eq!(alice.count("[dm:alice:bob] alice: psst, bob"), 1);

    // A direct message also reaches someone chatting in a room.
    let mut carol = Term::cli(&cli, &url, "carol", "general").await;
    let mut eve = Term::direct(&cli, &url, "eve", "carol").await;
    eve.say("hi carol, privately").await;
    carol
        .expect("[dm:carol:eve] eve: hi carol, privately")
        .await;

    for term in [alice, bob, carol, eve] {
        let name = term.name.clone();
        let (status, _) = term.eof().await;
        assert!(status.success(), "{name} exited with {status}");
    }
}

#[tokio::test]
async fn end_of_input_sends_what_was_typed_then_exits_0() {
    let Some(cli) = example("cli") else { return };
    let url = start_server().await;

    let mut alice = Term::cli(&cli, &url, "alice", "general").await;
    // Typed and Ctrl-D at once, without waiting for anything: still sent before the exit.
    alice.say("first").await;
    alice.say("last words").await;
    let (status, _) = alice.eof().await;
    assert!(status.success(), "alice exited with {status}");

    let bob = Term::cli(&cli, &url, "bob", "general").await;
    let history: Vec<&str> = bob
        .seen
        .iter()
        .filter(|l| l.starts_with('['))
        .map(String::as_str)
        .collect();
    assert_eq!(
        history,
        ["[general] alice: first", "[general] alice: last words"]
    );
    assert!(
        bob.seen
            .iter()
            .any(|l| l == "* members of general: alice (offline), bob (online)"),
        "{:#?}",
        bob.seen
    );
    let (status, _) = bob.eof().await;
    assert!(status.success(), "bob exited with {status}");
}

#[tokio::test]
async fn typing_and_presence_of_an_application_and_the_echo_bot() {
    let Some(cli) = example("cli") else { return };
    let Some(bot) = example("echo_bot") else {
        return;
    };
    let url = start_server().await;
    let general = RoomId::new("general").unwrap();

    let mut alice = Term::cli(&cli, &url, "alice", "general").await;

    // An application on the Rust client: typing and presence show in alice's terminal.
    let (dave, _dave_events) = chat_client::connect(url.as_str(), "dev:dave")
        .await
        .unwrap();
    dave.join(&general).await.unwrap();
    alice.expect("* dave joined general").await;
    dave.typing(&general, true).await.unwrap();
    alice.expect("* dave is typing…").await;
    // A body with a newline (or a terminal escape) stays on one line.
    dave.send(&general, "two\nlines").await.unwrap();
    alice.expect("[general] dave: two\\nlines").await;
    dave.close().await;
    alice.expect("* dave is offline").await;

    // The echo bot answers alice, once per message, never itself.
    let mut echo = Term::spawn(&bot, "echo-bot", &["--url", &url, "--room", "general"]);
    echo.expect("echo-bot is listening in general").await;
    alice.expect("* echo-bot joined general").await;
    alice.say("marco").await;
    alice.say("polo").await;
    let mut messages = Vec::new();
    for _ in 0..4 {
        messages.push(alice.next_message().await);
    }
    messages.sort();
    assert_eq!(
        messages,
        [
            "[general] alice: marco",
            "[general] alice: polo",
            "[general] echo-bot: echo: marco",
            "[general] echo-bot: echo: polo",
        ]
    );
    // Nothing more comes from the bot: the next message is alice's own.
    alice.say("bye").await;
    assert_eq!(alice.next_message().await, "[general] alice: bye");
    assert_eq!(alice.next_message().await, "[general] echo-bot: echo: bye");

    let (status, _) = alice.eof().await;
    assert!(status.success(), "alice exited with {status}");
    drop(echo); // killed
}

#[tokio::test]
async fn help_and_bad_arguments() {
    let Some(cli) = example("cli") else { return };
    let help = Term::spawn(&cli, "help", &["--help"]);
    let (status, seen) = help.finish().await;
    assert!(status.success(), "--help exited with {status}");
    assert!(seen[0].starts_with("usage: cli --user NAME"), "{seen:#?}");

    let bad = Term::spawn(&cli, "bad", &["--room", "general"]);
    let (status, _) = bad.finish().await;
    assert_eq!(status.code(), Some(2), "no --user");
}
