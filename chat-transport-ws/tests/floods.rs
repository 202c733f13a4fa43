//! Floods against the standalone listener (issue 9, must-show 3).
//!
//! - 5,000 connections from 20 loopback addresses against a per-IP cap of 100: exactly 100
//!   per address are admitted, every other one reads the per-IP 503 and is closed by the
//!   server, and an address that lets half of its connections go can connect again up to
//!   its cap, not beyond.
//! - 1,250 handshakes that stall (1,000 silent, 200 with half a request head, 50 trickling
//!   one byte every 100 ms) against a 2 s handshake deadline: the server closes every one
//!   of them at its deadline.
//!
//! Throughout both, two users on another address chat in a room (every round bounded by a
//! guard, never by a tight timing), and a new client from a third address connects and
//! says hello in the middle of the flood.
//!
//! Memory: each flood reads the process's RSS before, at its peak and once its connections
//! are closed (the server still running), then runs the same flood eight more times. The
//! allocator keeps what was freed for reuse, so RSS after closing stays near the peak
//! whether or not anything leaked; the repeated floods tell the two apart: they reuse what
//! the first freed, so RSS levels off, while what leaks adds up flood after flood.
//!
//! The connections are opened so that the listener's accept queue (a backlog of 128, what
//! `WsServer::bind` gets from tokio) never overflows: otherwise the kernel holds some
//! connections the server never sees, which no server-side deadline can close. The
//! ignored test opens the stalled connections in one burst and shows exactly that.
//!
//! The floods never run at once (a lock), each on a runtime of two workers, and each skips,
//! saying why, when the process may not open 12,000 files.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chat_transport_ws::WsConfig;
use serde_json::json;
use support::{Client, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The floods take this in turn: they must not run at once (file descriptors, RSS).
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Whether a flood already ran in this process (its freed memory is then reused by the
/// next, whose growth in RSS understates what its connections take).
static FLOODED_BEFORE: AtomicBool = AtomicBool::new(false);

/// The fewest open files a flood needs (5,000 client sockets, their server sides, margin).
const FILES_NEEDED: u64 = 12_000;

/// Where the legitimate users connect from (no flood comes from there).
const LEGIT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Where a new legitimate client connects from in the middle of a flood.
const NEWCOMER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The first flood: 250 connections from each of 127.0.0.10 … 127.0.0.29, cap 100.
const FLOOD_SOURCES: u8 = 20;
const FLOOD_FIRST: u8 = 10;
const PER_SOURCE: usize = 250;
const CAP: usize = 100;
const FLOOD_TOTAL: usize = FLOOD_SOURCES as usize * PER_SOURCE;
/// Connection attempts under way at once (connect, upgrade, hello). Below the listen
/// backlog of `WsServer::bind` (128, tokio's default), so that the kernel's accept queue
/// never overflows and the flood measures the server, not TCP's retransmission timers.
const IN_FLIGHT: usize = 100;
/// The listen backlog `WsServer::bind` gets from tokio (and mio).
const BIND_BACKLOG: usize = 128;

/// The stalled handshakes: from 127.0.0.40 … 127.0.0.49.
const STALL_SOURCES: u8 = 10;
const STALL_FIRST: u8 = 40;
const SILENT: usize = 1_000;
const HALF_HEAD: usize = 200;
const SLOWLORIS: usize = 50;
const STALLED: usize = SILENT + HALF_HEAD + SLOWLORIS;
/// The stalled connections are opened in batches this large, each once the listener's
/// accept queue is empty again (below [`BIND_BACKLOG`]: none is lost in the kernel) …
const STALL_BATCH: usize = 100;
/// … or, in the burst that shows the backlog's effect, this many connects at once.
const BURST_IN_FLIGHT: usize = 500;
const DEADLINE: Duration = Duration::from_secs(2);
/// Only a failure guard: a stalled socket still open this long after its deadline fails.
const MARGIN: Duration = Duration::from_secs(5);
const TRICKLE_EVERY: Duration = Duration::from_millis(100);

/// The chatting users' rounds: a pause between them, and a cap on their number.
const ROUND_PAUSE: Duration = Duration::from_millis(20);
const MAX_ROUNDS: usize = 3_000;

/// What may be left in RSS once a flood's connections are closed.
const LEFT_AFTER_CLOSE_KIB: u64 = 32 * 1024;
/// How many identical floods follow the first, for the leak check …
const REPEATS: usize = 8;
/// … of which the first ones warm the allocator up (RSS creeps up over the first few
/// floods, and dips now and then, then levels off) …
const WARM_UP: usize = 3;
/// … and after them RSS may rise by less than this per connection and flood (bytes).
const LEAK_PER_CONNECTION: u64 = 1024;

/// A complete WebSocket upgrade request.
const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
/// Half of one.
const HALF: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n";
/// The start of a slowloris's head; then a header value that never ends.
const TRICKLE_START: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

// ---------------------------------------------------------------------------------------
// The process: its limits and its memory.

fn one_flood_at_a_time() -> MutexGuard<'static, ()> {
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The soft limit of open files, from /proc/self/limits: `Ok(None)` when unlimited,
/// `Err` when it cannot be read.
fn open_files_limit() -> Result<Option<u64>, String> {
    let limits = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("/proc/self/limits: {e}"))?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .ok_or("no `Max open files` in /proc/self/limits")?;
    Ok(soft.parse().ok())
}

/// Whether the process may open enough files for a flood (and has a /proc to measure it
/// by); says why not.
fn enough_files(test: &str) -> bool {
    let why_not = match open_files_limit() {
        Err(e) => e,
        Ok(Some(limit)) if limit < FILES_NEEDED => format!(
            "the process may open {limit} files, the flood needs {FILES_NEEDED} (raise \
             `ulimit -n`)"
        ),
        Ok(_) if std::fs::metadata("/proc/self/status").is_err() => {
            "no /proc/self/status to read RSS from".to_owned()
        }
        Ok(_) => return true,
    };
    println!("{test}: SKIPPED: {why_not}");
    false
}

/// This process's resident set, in KiB (VmRSS of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How often the kernel's accept queues overflowed in this network namespace (TcpExt
/// ListenOverflows of /proc/net/netstat): a connection the kernel completed but the
/// listener had no room for, which the server cannot see, let alone close.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names
        .split_whitespace()
        .position(|name| name == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// How many connections wait in the accept queue of the listener on 127.0.0.1:`port` (the
/// rx_queue of its LISTEN line in /proc/net/tcp); `None` when it cannot be read.
///
/// Read line by line, listening sockets come first: the whole file grows by thousands of
/// lines per flood (TIME_WAIT), and reading it whole would grow the RSS being measured.
fn accept_queue(port: u16) -> Option<usize> {
    let tcp = std::io::BufReader::new(std::fs::File::open("/proc/net/tcp").ok()?);
    let local = format!("0100007F:{port:04X}");
    let line = tcp.lines().map_while(Result::ok).find(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(1) == Some(&*local) && fields.nth(1) == Some("0A")
    })?;
    let queues = line.split_whitespace().nth(4)?;
    usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
}

fn overflows_since(before: Option<u64>) -> String {
    match (before, listen_overflows()) {
        (Some(before), Some(now)) => format!("{}", now.saturating_sub(before)),
        _ => "unknown".to_owned(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// RSS figures of a flood, in KiB.
struct Rss {
    before: u64,
    /// All of the first flood's connections held.
    peak: u64,
    /// The first flood's connections closed, the server still running.
    after: u64,
    /// The same with each of the [`REPEATS`] identical floods that follow.
    again: Vec<(u64, u64)>,
    /// Whether another flood ran before in this process.
    flooded_before: bool,
}

/// Prints the RSS figures and checks that little is left after closing, and that repeated
/// floods leave RSS level: nothing per connection adds up.
fn report_memory(test: &str, rss: Rss, peak_connections: usize) {
    let grown = rss.peak.saturating_sub(rss.before);
    let against = |kib: u64| (kib as f64 - rss.before as f64) / 1024.0;
    let again: Vec<String> = rss
        .again
        .iter()
        .map(|&(peak, after)| format!("{:+.1}/{:+.1}", against(peak), against(after)))
        .collect();
    println!(
        "{test}: RSS before {:.1} MiB; first flood: peak {:.1} MiB ({:+.1}), after closing \
         {:.1} MiB ({:+.1}); the {REPEATS} identical floods after it, peak/after closing \
         (MiB against before): {}",
        mib(rss.before),
        mib(rss.peak),
        against(rss.peak),
        mib(rss.after),
        against(rss.after),
        again.join(", "),
    );
    println!(
        "{test}: at the peak, {peak_connections} connections held: {:.1} KiB of RSS each; \
         this is the whole test process, so it counts both ends: the server's side of each \
         connection and the test's own client socket (a raw TCP socket, or a tungstenite \
         client with a 4 KiB read buffer)",
        grown as f64 / peak_connections as f64,
    );
    if rss.flooded_before {
        println!(
            "{test}: another flood ran before in this process, and this one may have reused \
             the memory it freed: then the growth above understates what a connection takes \
             (run this test alone for that figure)"
        );
    }
    let left = rss.after.saturating_sub(rss.before);
    assert!(
        left < LEFT_AFTER_CLOSE_KIB,
        "{test}: {:.1} MiB of RSS left after every flood connection closed",
        mib(left)
    );
    // The allocator keeps freed memory for reuse rather than giving it back, so `after`
    // alone cannot tell a leak from a cache; identical floods can: they reuse what was
    // freed, and only what leaked adds up, flood after flood. The rate is the median of
    // the slopes between every two floods after the warm-up (Theil-Sen): a leak raises all
    // of them, while a one-off step (a flood that peaked higher than the others, so the
    // allocator kept more) raises only a few.
    let afters: Vec<f64> = rss.again[WARM_UP - 1..]
        .iter()
        .map(|&(_, after)| after as f64)
        .collect();
    let mut slopes = Vec::new();
    for (i, a) in afters.iter().enumerate() {
        for (j, b) in afters.iter().enumerate().skip(i + 1) {
            slopes.push((b - a) / (j - i) as f64);
        }
    }
    slopes.sort_by(f64::total_cmp);
    let kib_per_flood = slopes[slopes.len() / 2];
    let per_connection = (kib_per_flood * 1024.0 / peak_connections as f64).max(0.0);
    println!(
        "{test}: after the {WARM_UP} warm-up floods, RSS after closing rose by a median \
         {kib_per_flood:+.0} KiB per flood: {per_connection:.0} bytes per connection (a leak \
         of {LEAK_PER_CONNECTION} bytes each would be {} KiB per flood)",
        LEAK_PER_CONNECTION * peak_connections as u64 / 1024,
    );
    assert!(
        per_connection < LEAK_PER_CONNECTION as f64,
        "{test}: RSS rose by {per_connection:.0} bytes per connection and flood over \
         {} identical floods: something per connection leaks",
        afters.len()
    );
}

// ---------------------------------------------------------------------------------------
// Connections from a chosen loopback address.

fn source(first: u8, index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first + index)
}

async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .unwrap_or_else(|_| panic!("a connection from {source} took over {WAIT:?}"))
        .unwrap_or_else(|e| panic!("a connection from {source} failed: {e}"))
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it (FIN).
    Eof,
    /// The server reset it.
    Reset,
    /// Still open when the guard ran out.
    Open,
}

enum Upgraded {
    Switched(TcpStream),
    /// Any other answer, read to the end of the connection.
    Answered {
        answer: String,
        end: End,
    },
}

/// Sends the upgrade request and reads the raw answer: the 101's head, or any other answer
/// up to the end of the connection.
async fn upgrade(mut stream: TcpStream) -> Upgraded {
    // A refused connection may be closed before its request arrives: the write may fail,
    // what the server said is read all the same.
    let _ = stream.write_all(UPGRADE).await;
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    let end = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            if answer.starts_with(b"HTTP/1.1 101 ") {
                assert_eq!(at + 4, answer.len(), "nothing follows the 101 before hello");
                return Upgraded::Switched(stream);
            }
        }
        if answer.len() > 4096 {
            break End::Open;
        }
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => break End::Open,
            Ok(Ok(0)) => break End::Eof,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break End::Reset,
        }
    };
    Upgraded::Answered {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        end,
    }
}

enum Outcome {
    /// Upgraded, and `hello` accepted.
    Admitted(Box<Client>),
    Refused {
        answer: String,
        end: End,
    },
}

/// One connection from `source`: connect, upgrade, and `hello` as `user` if upgraded.
async fn attempt(server: SocketAddr, source: Ipv4Addr, user: &str) -> Outcome {
    match upgrade(connect_from(source, server).await).await {
        Upgraded::Switched(stream) => {
            // A small read buffer (tungstenite's default is 128 KiB, allocated at once), so
            // that the test's own clients weigh less in the process's RSS.
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
            let stream = MaybeTlsStream::Plain(stream);
            let ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await;
            let mut client = Client::from_stream(ws);
            client.hello(user, json!({})).await;
            Outcome::Admitted(Box::new(client))
        }
        Upgraded::Answered { answer, end } => Outcome::Refused { answer, end },
    }
}

/// A client from `source` that said hello as `user`; panics if refused.
async fn client_from(server: SocketAddr, source: Ipv4Addr, user: &str) -> Client {
    match attempt(server, source, user).await {
        Outcome::Admitted(client) => *client,
        Outcome::Refused { answer, end } => {
            panic!("{user} from {source} was refused: {answer:?} ({end:?})")
        }
    }
}

fn is_503_from_the_cap(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 503 ")
        && answer.ends_with("too many connections from this address")
}

/// Waits (bounded) until the engine has `sessions` sessions; returns how many it has.
async fn sessions_settle(server: &TestServer, sessions: usize) -> usize {
    wait_for(Duration::from_secs(10), || {
        server.engine.connections() == sessions
    })
    .await;
    server.engine.connections()
}

// ---------------------------------------------------------------------------------------
// The legitimate users: alice says something in "lobby", bob and alice get it.

#[derive(Debug, Clone, Copy)]
struct Round {
    done: Instant,
    took: Duration,
}

/// One round of chat, bounded by a guard.
async fn chat_round(alice: &mut Client, bob: &mut Client, n: usize) -> Round {
    let started = Instant::now();
    let (cid, body) = (format!("c-{n}"), format!("round {n}"));
    tokio::time::timeout(WAIT, async {
        alice.say("lobby", &cid, &body).await;
        let got = bob.push("message").await;
        assert_eq!(
            (got["body"].as_str(), got["from"].as_str()),
            (Some(&*body), Some("alice"))
        );
        let own = alice.push("message").await;
        assert_eq!(own["cid"].as_str(), Some(&*cid));
    })
    .await
    .unwrap_or_else(|_| panic!("chat round {n} did not complete within {WAIT:?}"));
    Round {
        done: Instant::now(),
        took: started.elapsed(),
    }
}

/// Two users from [`LEGIT`] chatting in rounds until stopped.
struct Chatter {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Client, Client, Vec<Round>)>,
}

impl Chatter {
    async fn start(server: &TestServer) -> Chatter {
        let mut alice = client_from(server.addr, LEGIT, "alice").await;
        let mut bob = client_from(server.addr, LEGIT, "bob").await;
        alice.join("lobby").await;
        bob.join("lobby").await;
        // One round before anything else happens.
        chat_round(&mut alice, &mut bob, 0).await;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut rounds = Vec::new();
            for n in 1..=MAX_ROUNDS {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                rounds.push(chat_round(&mut alice, &mut bob, n).await);
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            (alice, bob, rounds)
        });
        Chatter { stop, task }
    }

    /// Stops the rounds, prints what they did while the flood went on (`from` … `to`),
    /// and plays one more round.
    async fn finish(self, test: &str, from: Instant, to: Instant) -> (Client, Client) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut alice, mut bob, rounds) = self.task.await.unwrap();
        let during = rounds
            .iter()
            .filter(|r| r.done >= from && r.done <= to)
            .count();
        let slowest = rounds.iter().map(|r| r.took).max().unwrap_or_default();
        println!(
            "{test}: the legitimate users chatted {} rounds, {during} of them during the \
             flood ({:.2?} long); slowest round {slowest:.2?} (guard {WAIT:?})",
            rounds.len(),
            to - from,
        );
        assert!(
            during >= 1,
            "{test}: no chat round completed during the flood"
        );
        chat_round(&mut alice, &mut bob, MAX_ROUNDS + 1).await;
        (alice, bob)
    }
}

/// A new client from [`NEWCOMER`] that says hello, pings, joins a room and sends in it once
/// `ready()` holds (waited for, bounded); returns it with what `state()` said when it
/// started and when it was done.
fn newcomer(
    server: SocketAddr,
    ready: impl Fn() -> bool + Send + 'static,
    state: impl Fn() -> usize + Send + 'static,
) -> JoinHandle<(Client, usize, usize)> {
    tokio::spawn(async move {
        wait_for(Duration::from_secs(10), ready).await;
        let at_start = state();
        let mut carol = client_from(server, NEWCOMER, "carol").await;
        carol.ok(json!({"type": "ping"})).await;
        carol.join("carols-room").await;
        carol.say("carols-room", "c-1", "made it").await;
        (carol, at_start, state())
    })
}

fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    if times.is_empty() {
        return "none".to_owned();
    }
    format!(
        "min {:.2?}, median {:.2?}, max {:.2?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    )
}

// ---------------------------------------------------------------------------------------
// Flood 1: the per-IP cap.

#[test]
fn a_flood_of_5000_connections_from_20_addresses_meets_the_per_ip_cap() {
    let _turn = one_flood_at_a_time();
    let test = "per-IP flood";
    if !enough_files(test) {
        return;
    }
    runtime().block_on(Box::pin(per_ip_flood(test)));
}

/// What one flood of [`FLOOD_TOTAL`] connections got.
struct Flood {
    /// The admitted clients, per source address.
    admitted: Vec<Vec<Client>>,
    /// The refused, per source address.
    refused: Vec<usize>,
    /// Refusals that were not the per-IP 503.
    wrong_answers: Vec<String>,
    /// Refused connections the server reset (after its 503), and left open.
    reset: usize,
    left_open: usize,
    took: Duration,
    ended: Instant,
}

/// Opens [`PER_SOURCE`] connections from each of the [`FLOOD_SOURCES`] addresses,
/// interleaved, [`IN_FLIGHT`] at a time; counts those done in `done`.
async fn flood(server: &TestServer, name: &str, done: Arc<AtomicUsize>) -> Flood {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut attempts = JoinSet::new();
    for round in 0..PER_SOURCE {
        for index in 0..FLOOD_SOURCES {
            let (permits, done, addr) = (permits.clone(), done.clone(), server.addr);
            let user = format!("{name}-{index}-{round}");
            attempts.spawn(async move {
                let permit = permits.acquire_owned().await.unwrap();
                let outcome = attempt(addr, source(FLOOD_FIRST, index), &user).await;
                drop(permit);
                done.fetch_add(1, Ordering::Relaxed);
                (index, outcome)
            });
        }
    }
    let mut flood = Flood {
        admitted: (0..FLOOD_SOURCES).map(|_| Vec::new()).collect(),
        refused: vec![0; usize::from(FLOOD_SOURCES)],
        wrong_answers: Vec::new(),
        reset: 0,
        left_open: 0,
        took: Duration::ZERO,
        ended: started,
    };
    while let Some(joined) = attempts.join_next().await {
        let (index, outcome) = joined.unwrap();
        match outcome {
            Outcome::Admitted(client) => flood.admitted[usize::from(index)].push(*client),
            Outcome::Refused { answer, end } => {
                flood.refused[usize::from(index)] += 1;
                if !is_503_from_the_cap(&answer) {
                    flood.wrong_answers.push(format!("{answer:?} ({end:?})"));
                }
                match end {
                    End::Eof => {}
                    End::Reset => flood.reset += 1,
                    End::Open => flood.left_open += 1,
                }
            }
        }
    }
    flood.took = started.elapsed();
    flood.ended = Instant::now();
    flood
}

impl Flood {
    /// Prints the counts and checks the cap held: [`CAP`] admitted per address, every
    /// other one answered with the per-IP 503 and closed by the server.
    fn check(&self, test: &str, name: &str) {
        println!(
            "{test}: {name}: {FLOOD_TOTAL} connections from {FLOOD_SOURCES} addresses \
             ({IN_FLIGHT} attempts at once) in {:.2?}: admitted per address {:?}, refused \
             per address {:?}; every refused one read its 503, then the server closed it: \
             {} with FIN, {} reset (the request was unread), {} left open",
            self.took,
            self.admitted.iter().map(Vec::len).collect::<Vec<_>>(),
            self.refused,
            self.refused.iter().sum::<usize>() - self.reset - self.left_open,
            self.reset,
            self.left_open,
        );
        for (index, held) in self.admitted.iter().enumerate() {
            assert_eq!(
                (held.len(), self.refused[index]),
                (CAP, PER_SOURCE - CAP),
                "{test}: {name}: admitted and refused from {}",
                source(FLOOD_FIRST, index as u8)
            );
        }
        assert!(
            self.wrong_answers.is_empty(),
            "{test}: {name}: {} refusals were not the per-IP 503, e.g. {:?}",
            self.wrong_answers.len(),
            self.wrong_answers.first()
        );
        assert_eq!(
            self.left_open, 0,
            "{test}: {name}: refused connections left open"
        );
    }

    /// Closes every admitted connection; waits until the engine has `sessions` left.
    async fn close(self, test: &str, name: &str, server: &TestServer, sessions: usize) {
        let clients: Vec<Client> = self.admitted.into_iter().flatten().collect();
        let (count, closing) = (clients.len(), Instant::now());
        for mut client in clients {
            let _ = client.ws.close(None).await;
        }
        assert_eq!(sessions_settle(server, sessions).await, sessions);
        println!(
            "{test}: {name}: {count} flood sessions closed in {:.2?}; the engine is back to \
             {sessions} sessions",
            closing.elapsed()
        );
    }
}

async fn per_ip_flood(test: &str) {
    let mut ws = WsConfig::default();
    ws.max_connections_per_ip = CAP;
    // The engine's own cap stays at its default (100,000), far above the flood.
    let server = TestServer::with_ws_config(ws).await;
    let chatter = Chatter::start(&server).await;
    let overflows = listen_overflows();
    let flooded_before = FLOODED_BEFORE.swap(true, Ordering::Relaxed);
    let rss_before = rss_kib();

    let done = Arc::new(AtomicUsize::new(0));
    let carol = newcomer(
        server.addr,
        {
            let done = done.clone();
            move || done.load(Ordering::Relaxed) >= FLOOD_TOTAL / 5
        },
        {
            let done = done.clone();
            move || done.load(Ordering::Relaxed)
        },
    );
    let started = Instant::now();
    let mut first_flood = flood(&server, "flood", done).await;
    let (mut carol, carol_started_at, carol_done_at) = carol.await.unwrap();
    first_flood.check(test, "first flood");
    println!(
        "{test}: the newcomer from {NEWCOMER} started when {carol_started_at} of \
         {FLOOD_TOTAL} attempts were done and was in (hello, ping, join, send) at \
         {carol_done_at}"
    );
    assert!(
        carol_started_at < FLOOD_TOTAL,
        "{test}: the newcomer only got its turn after the flood"
    );
    // alice, bob, carol and the 2,000 admitted.
    let held = usize::from(FLOOD_SOURCES) * CAP;
    assert_eq!(sessions_settle(&server, 3 + held).await, 3 + held);
    let rss_peak = rss_kib();

    // One address lets half of its connections go, and may connect again up to its cap.
    let first = source(FLOOD_FIRST, 0);
    let kept = first_flood.admitted[0].split_off(CAP / 2);
    let let_go = std::mem::replace(&mut first_flood.admitted[0], kept);
    for mut client in let_go {
        let _ = client.ws.close(None).await;
    }
    let mut again = Vec::new();
    let mut refused_while_freeing = 0;
    for n in 0..2_000 {
        if again.len() == CAP / 2 {
            break;
        }
        match attempt(server.addr, first, &format!("again-{n}")).await {
            Outcome::Admitted(client) => again.push(*client),
            Outcome::Refused { answer, .. } => {
                assert!(is_503_from_the_cap(&answer), "{test}: {answer:?}");
                refused_while_freeing += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(
        again.len(),
        CAP / 2,
        "{test}: {first} could not connect again after letting {} go",
        CAP / 2
    );
    match attempt(server.addr, first, "one-too-many").await {
        Outcome::Refused { answer, end } => {
            assert!(is_503_from_the_cap(&answer), "{test}: {answer:?}");
            assert_ne!(
                end,
                End::Open,
                "{test}: the refused connection was left open"
            );
        }
        Outcome::Admitted(_) => panic!("{test}: {first} went over its cap after reconnecting"),
    }
    println!(
        "{test}: {first} let {} connections go, then connected {} again ({} refused while \
         the server noticed the closes); one more was refused with 503",
        CAP / 2,
        again.len(),
        refused_while_freeing
    );
    first_flood.admitted[0].extend(again);

    let flood_ended = first_flood.ended;
    let (alice, bob) = chatter.finish(test, started, flood_ended).await;
    carol.ok(json!({"type": "ping"})).await;

    // Everything from the flood goes; the server keeps running with the three others.
    first_flood.close(test, "first flood", &server, 3).await;
    let rss_after = rss_kib();

    // The same flood again, by the same users (what the server keeps per user, such as
    // presence, is not per connection): what the allocator kept from the first is used
    // again, and only what leaked would add up.
    let mut again = Vec::new();
    for n in 1..=REPEATS {
        let name = format!("flood {}", n + 1);
        let repeated = flood(&server, "flood", Arc::default()).await;
        repeated.check(test, &name);
        assert_eq!(sessions_settle(&server, 3 + held).await, 3 + held);
        let peak = rss_kib();
        repeated.close(test, &name, &server, 3).await;
        again.push((peak, rss_kib()));
    }
    println!(
        "{test}: accept queue overflows in this network namespace meanwhile: {}",
        overflows_since(overflows)
    );
    report_memory(
        test,
        Rss {
            before: rss_before,
            peak: rss_peak,
            after: rss_after,
            again,
            flooded_before,
        },
        held,
    );
    drop((alice, bob, carol));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Flood 2: handshakes that stall.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a request head and stops.
    HalfHead,
    /// Sends a head one byte every 100 ms, never finishing it.
    Slowloris,
}

struct Stalled {
    kind: Stall,
    end: End,
    /// From the connection's establishment to its closing by the server.
    after: Duration,
    /// Bytes the server sent (it has nothing to say to a stalled handshake).
    heard: usize,
}

/// Waits until `done()` holds, looking every millisecond, for at most `within`.
async fn wait_for(within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits, bounded, until `count` stalled connections are established and the listener's
/// accept queue is empty, so that the next batch cannot overflow it; returns the longest
/// queue seen meanwhile.
async fn batch_accepted(server: &TestServer, connected: &AtomicUsize, count: usize) -> usize {
    wait_for(Duration::from_secs(5), || {
        connected.load(Ordering::Relaxed) >= count
    })
    .await;
    let mut longest = 0;
    wait_for(Duration::from_secs(5), || {
        match accept_queue(server.addr.port()) {
            Some(queue) => {
                longest = longest.max(queue);
                queue == 0
            }
            // Unknown (no /proc/net/tcp): nothing to wait for.
            None => true,
        }
    })
    .await;
    longest
}

/// Reads until the server closes the connection or `until` passes.
async fn wait_for_close(stream: &mut TcpStream, until: tokio::time::Instant) -> (End, usize) {
    let mut heard = 0;
    let mut buf = [0_u8; 1024];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return (End::Open, heard),
            Ok(Ok(0)) => return (End::Eof, heard),
            Ok(Ok(n)) => heard += n,
            Ok(Err(_)) => return (End::Reset, heard),
        }
    }
}

/// Writes a head one byte every [`TRICKLE_EVERY`] until the server closes the connection or
/// `until` passes.
async fn trickle(stream: &mut TcpStream, until: tokio::time::Instant) -> (End, usize) {
    let mut ticks = tokio::time::interval(TRICKLE_EVERY);
    let mut heard = 0;
    let mut buf = [0_u8; 1024];
    let bytes = TRICKLE_START.iter().copied().chain(std::iter::repeat(b'a'));
    // Bounded: the guard passes long before the bytes run out of the head limit (8 KiB).
    let steps = (DEADLINE + MARGIN).as_millis() / TRICKLE_EVERY.as_millis() + 1;
    for byte in bytes.take(steps as usize) {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) => return (End::Eof, heard),
                Ok(n) => heard += n,
                Err(_) => return (End::Reset, heard),
            },
            _ = ticks.tick() => {
                if stream.write_all(&[byte]).await.is_err() {
                    return (End::Reset, heard);
                }
            }
            () = tokio::time::sleep_until(until) => return (End::Open, heard),
        }
    }
    wait_for_close(stream, until).await
}

async fn stall(
    server: SocketAddr,
    from: Ipv4Addr,
    kind: Stall,
    permits: Option<Arc<Semaphore>>,
    connected: Arc<AtomicUsize>,
) -> Stalled {
    let mut stream = match permits {
        Some(permits) => {
            let _permit = permits.acquire().await.unwrap();
            connect_from(from, server).await
        }
        None => connect_from(from, server).await,
    };
    connected.fetch_add(1, Ordering::Relaxed);
    let connected = Instant::now();
    let until = tokio::time::Instant::now() + DEADLINE + MARGIN;
    let (end, heard) = match kind {
        Stall::Silent => wait_for_close(&mut stream, until).await,
        Stall::HalfHead => {
            stream.write_all(HALF).await.unwrap();
            wait_for_close(&mut stream, until).await
        }
        Stall::Slowloris => trickle(&mut stream, until).await,
    };
    Stalled {
        kind,
        end,
        after: connected.elapsed(),
        heard,
    }
}

#[test]
fn a_thousand_stalled_handshakes_are_all_closed_at_their_deadline() {
    let _turn = one_flood_at_a_time();
    let test = "stalled handshakes";
    if !enough_files(test) {
        return;
    }
    runtime().block_on(Box::pin(stalled_handshakes(test, Opening::Paced)));
}

/// The same stalled connections opened in one burst, 500 connects at a time, without
/// waiting for the server to accept them.
#[test]
fn a_burst_of_stalled_handshakes_is_all_closed_at_the_deadline() {
    let _turn = one_flood_at_a_time();
    let test = "stalled handshakes, one burst";
    if !enough_files(test) {
        return;
    }
    runtime().block_on(Box::pin(stalled_handshakes(test, Opening::Burst)));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// In batches of [`STALL_BATCH`], each once the accept queue is empty.
    Paced,
    /// All at once, [`BURST_IN_FLIGHT`] connects at a time.
    Burst,
}

const FIRST_ROUND: &str = "first round";

/// Stalled connections being opened, or open.
struct Stalls {
    tasks: JoinSet<Stalled>,
    started: Instant,
    /// How long opening them all took.
    connected_in: Duration,
    /// The longest accept queue seen between batches.
    longest_queue: usize,
    /// The kernel's count of accept queue overflows when they began.
    overflows: Option<u64>,
}

/// Opens [`STALLED`] stalled connections (a slowloris, four half heads and twenty silent
/// ones in every twenty-five), spread over [`STALL_SOURCES`] addresses; returns once all
/// are established. Counts those closed in `closed`.
async fn open_stalls(server: &TestServer, opening: Opening, closed: &Arc<AtomicUsize>) -> Stalls {
    let overflows = listen_overflows();
    let permits = (opening == Opening::Burst).then(|| Arc::new(Semaphore::new(BURST_IN_FLIGHT)));
    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut longest_queue = 0;
    for n in 0..STALLED {
        if opening == Opening::Paced && n > 0 && n % STALL_BATCH == 0 {
            longest_queue = longest_queue.max(batch_accepted(server, &connected, n).await);
        }
        let kind = match n % 25 {
            0 => Stall::Slowloris,
            1..=4 => Stall::HalfHead,
            _ => Stall::Silent,
        };
        let from = source(STALL_FIRST, (n % usize::from(STALL_SOURCES)) as u8);
        let (permits, connected, closed, addr) = (
            permits.clone(),
            connected.clone(),
            closed.clone(),
            server.addr,
        );
        tasks.spawn(async move {
            let stalled = stall(addr, from, kind, permits, connected).await;
            closed.fetch_add(1, Ordering::Relaxed);
            stalled
        });
    }
    // Every stalled connection established (and, paced, accepted).
    let last = match opening {
        Opening::Paced => batch_accepted(server, &connected, STALLED).await,
        Opening::Burst => {
            wait_for(Duration::from_secs(5), || {
                connected.load(Ordering::Relaxed) == STALLED
            })
            .await;
            0
        }
    };
    assert_eq!(connected.load(Ordering::Relaxed), STALLED);
    Stalls {
        tasks,
        started,
        connected_in: started.elapsed(),
        longest_queue: longest_queue.max(last),
        overflows,
    }
}

impl Stalls {
    /// Waits for every stalled connection to end (each bounded by its guard), prints how
    /// they ended and checks that the server closed all of them at their deadline.
    async fn finish(mut self, test: &str, name: &str, opening: Opening) -> Instant {
        let mut results = Vec::with_capacity(STALLED);
        while let Some(joined) = self.tasks.join_next().await {
            results.push(joined.unwrap());
        }
        let all_closed_in = self.started.elapsed();
        for kind in [Stall::Silent, Stall::HalfHead, Stall::Slowloris] {
            let of_kind: Vec<&Stalled> = results.iter().filter(|s| s.kind == kind).collect();
            let fin = of_kind.iter().filter(|s| s.end == End::Eof).count();
            let reset = of_kind.iter().filter(|s| s.end == End::Reset).count();
            let heard = of_kind.iter().filter(|s| s.heard > 0).count();
            let open = of_kind.len() - fin - reset;
            // In detail the first time, and whenever something is wrong.
            if name == FIRST_ROUND || open > 0 || heard > 0 {
                println!(
                    "{test}: {name}: {} {kind:?}: {fin} closed with FIN, {reset} reset, \
                     {open} left open, {heard} heard something; closed after {}",
                    of_kind.len(),
                    spread(of_kind.iter().map(|s| s.after).collect()),
                );
            }
        }
        println!(
            "{test}: {name}: {STALLED} stalled connections from {STALL_SOURCES} addresses, \
             all connected {:.2?} after the start, all ended {all_closed_in:.2?} after it; \
             deadline {DEADLINE:?}, guard {:?}; opened {}; accept queue overflows in this \
             network namespace meanwhile: {}",
            self.connected_in,
            DEADLINE + MARGIN,
            match opening {
                Opening::Paced => format!(
                    "in batches of {STALL_BATCH}, each once the accept queue was empty \
                     (longest queue seen {}, backlog {BIND_BACKLOG})",
                    self.longest_queue
                ),
                Opening::Burst => format!("in one burst, {BURST_IN_FLIGHT} connects at a time"),
            },
            overflows_since(self.overflows),
        );
        let open: Vec<&Stalled> = results.iter().filter(|s| s.end == End::Open).collect();
        assert!(
            open.is_empty(),
            "{test}: {name}: {} stalled connections still open {MARGIN:?} after their \
             deadline, e.g. {:?}",
            open.len(),
            open.first().map(|s| s.kind)
        );
        // Closed by the deadline, not by something else first (such as the per-IP cap).
        let early: Vec<&Stalled> = results.iter().filter(|s| s.after < DEADLINE / 2).collect();
        assert!(
            early.is_empty(),
            "{test}: {name}: {} stalled connections were closed long before the deadline, \
             e.g. {:?} after {:?}",
            early.len(),
            early.first().map(|s| s.kind),
            early.first().map(|s| s.after)
        );
        Instant::now()
    }
}

async fn stalled_handshakes(test: &str, opening: Opening) {
    let mut ws = WsConfig::default();
    ws.handshake_timeout = DEADLINE;
    // The per-IP cap stays at its default (1,000): each address opens 125.
    let server = TestServer::with_ws_config(ws).await;
    let chatter = Chatter::start(&server).await;
    let flooded_before = FLOODED_BEFORE.swap(true, Ordering::Relaxed);
    let rss_before = rss_kib();

    let closed = Arc::new(AtomicUsize::new(0));
    let stalls = open_stalls(&server, opening, &closed).await;
    let started = stalls.started;
    let rss_peak = rss_kib();
    let closed_at_peak = closed.load(Ordering::Relaxed);
    let carol = newcomer(server.addr, || true, {
        let closed = closed.clone();
        move || closed.load(Ordering::Relaxed)
    });
    let stalls_ended = stalls.finish(test, FIRST_ROUND, opening).await;
    let (mut carol, carol_started_at, carol_done_at) = carol.await.unwrap();
    println!(
        "{test}: at the peak {closed_at_peak} of {STALLED} were closed; the newcomer from \
         {NEWCOMER} started then and was in (hello, ping, join, send) when {carol_done_at} \
         were"
    );
    assert!(
        carol_started_at < STALLED,
        "{test}: the newcomer only got its turn after the stalls"
    );
    let (alice, bob) = chatter.finish(test, started, stalls_ended).await;
    carol.ok(json!({"type": "ping"})).await;
    assert_eq!(sessions_settle(&server, 3).await, 3);
    let rss_after = rss_kib();

    // The same again: only what leaked would add up.
    let mut again = Vec::new();
    for n in 1..=REPEATS {
        let stalls = open_stalls(&server, opening, &Arc::default()).await;
        let peak = rss_kib();
        stalls
            .finish(test, &format!("round {}", n + 1), opening)
            .await;
        carol.ok(json!({"type": "ping"})).await;
        again.push((peak, rss_kib()));
    }
    report_memory(
        test,
        Rss {
            before: rss_before,
            peak: rss_peak,
            after: rss_after,
            again,
            flooded_before,
        },
        STALLED,
    );
    drop((alice, bob, carol));
    server.stop().await;
}
