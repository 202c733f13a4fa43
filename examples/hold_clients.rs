//! Holds many WebSocket connections open against one or more chat-engine nodes: the client
//! of `scripts/scale_run.sh`.
//!
//! ```sh
//! cargo run --release --example hold_clients -- \
//!     --url ws://127.0.0.1:9001/ws,ws://127.0.0.1:9002/ws --count 10000 --hold 60
//! ```
//!
//! Connection `g` (counted from `--offset`) goes to node `g % nodes` (round-robin), from the
//! source address `127.0.0.<from + (g / (nodes * per-ip)) % span>` so that no address holds
//! more than `--per-ip` connections on one node (the listener refuses more than 1,000), logs
//! in as `dev:<prefix><g>` and waits for its `ok`. At most `--concurrency` are being set up
//! at once; each has `--timeout` seconds. Then all are held (reading, so pings are answered)
//! for `--hold` seconds, or until `--stop-file` exists, then closed.
//!
//! Prints progress to stderr, one line `{"event":"connected",...}` on stdout once every
//! connection has said hello or failed, and a final `{"event":"done",...}` line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const USAGE: &str = "usage: hold_clients --url WS_URL[,WS_URL...] [--count N] [--offset N] [--hold SECONDS] [--concurrency N] [--timeout SECONDS] [--src FROM-TO] [--per-ip N] [--prefix NAME] [--stop-file PATH]
  --url URLS         ws://HOST:PORT/ws of each node, comma-separated (connections go round-robin)
  --count N          connections to open (default 1000, at most 1000000)
  --offset N         the first connection's global number (default 0): several processes
                     take disjoint ranges, so users and source addresses do not collide
  --hold SECONDS     how long to hold them once all have said hello (default 30)
  --concurrency N    connections being set up at once (default 500)
  --timeout SECONDS  for each connection's TCP connect, upgrade and hello (default 30)
  --src FROM-TO      source addresses 127.0.0.FROM..=127.0.0.TO (default 2-254)
  --per-ip N         connections per source address per node (default 900)
  --prefix NAME      users are dev:<NAME><number> (default u)
  --stop-file PATH   stop holding as soon as PATH exists";

struct Args {
    urls: Vec<(String, SocketAddr)>,
    count: u64,
    offset: u64,
    hold: Duration,
    concurrency: usize,
    timeout: Duration,
    src_from: u8,
    src_to: u8,
    per_ip: u64,
    prefix: String,
    stop_file: Option<PathBuf>,
}

fn number<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or(format!("{name} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{name} {value}: not a number"))
}

/// The socket address of `ws://HOST:PORT/...` (an IP address, no name lookup).
fn socket_of(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or(format!("{url}: only ws:// URLs"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .map_err(|e| format!("{url}: {authority}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        urls: Vec::new(),
        count: 1_000,
        offset: 0,
        hold: Duration::from_secs(30),
        concurrency: 500,
        timeout: Duration::from_secs(30),
        src_from: 2,
        src_to: 254,
        per_ip: 900,
        prefix: "u".to_owned(),
        stop_file: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--url" => {
                let value = argv.next().ok_or("--url needs URLS")?;
                for url in value.split(',').filter(|url| !url.is_empty()) {
                    args.urls.push((url.to_owned(), socket_of(url)?));
                }
            }
            "--count" => args.count = number("--count", argv.next())?,
            "--offset" => args.offset = number("--offset", argv.next())?,
            "--hold" => args.hold = Duration::from_secs(number("--hold", argv.next())?),
            "--concurrency" => args.concurrency = number("--concurrency", argv.next())?,
            "--timeout" => args.timeout = Duration::from_secs(number("--timeout", argv.next())?),
            "--src" => {
                let value = argv.next().ok_or("--src needs FROM-TO")?;
                let (from, to) = value
                    .split_once('-')
                    .ok_or(format!("--src {value}: FROM-TO"))?;
                args.src_from = number("--src", Some(from.to_owned()))?;
                args.src_to = number("--src", Some(to.to_owned()))?;
            }
            "--per-ip" => args.per_ip = number("--per-ip", argv.next())?,
            "--prefix" => args.prefix = argv.next().ok_or("--prefix needs NAME")?,
            "--stop-file" => {
                args.stop_file = Some(argv.next().ok_or("--stop-file needs PATH")?.into());
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.urls.is_empty() {
        return Err(format!("--url is required\n{USAGE}"));
    }
    if args.count > 1_000_000 {
        return Err("--count: at most 1000000".to_owned());
    }
    if args.concurrency == 0 || args.per_ip == 0 || args.timeout.is_zero() {
        return Err("--concurrency, --per-ip and --timeout must be positive".to_owned());
    }
    if args.src_from == 0 || args.src_from > args.src_to || args.src_to == 255 {
        return Err("--src: 1 ≤ FROM ≤ TO ≤ 254".to_owned());
    }
    Ok(args)
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens connection `g`: TCP from `source`, the upgrade, `hello`, its `ok`.
async fn open(url: &str, addr: SocketAddr, source: IpAddr, user: &str) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let request = url
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map_err(|e| format!("upgrade: {e}"))?;
    let hello = format!(r#"{{"type":"hello","id":1,"token":"dev:{user}"}}"#);
    ws.send(Message::text(hello))
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    // The answer to the hello; at most a few other frames may come first.
    for _ in 0..16 {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if text.contains(r#""type":"ok""#) {
                    return Ok(ws);
                }
                if text.contains(r#""type":"error""#) {
                    return Err(format!("hello refused: {text}"));
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed before ok".to_owned()),
        }
    }
    Err("no ok in the first 16 frames".to_owned())
}

/// Reads `ws` (answering pings) until `stop` turns true; then closes it. True if the
/// connection was still open when told to stop.
async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>) -> bool {
    let alive = loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break true,
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break false,
                Some(Ok(_)) => {}
            },
        }
    };
    if alive {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    alive
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let counts = Arc::new(Counts::default());
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let nodes = args.urls.len() as u64;
    let span = u64::from(args.src_to - args.src_from) + 1;
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));

    let mut tasks = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        let g = args.offset + i;
        let (args, counts, permits, stop_rx, first_error) = (
            args.clone(),
            counts.clone(),
            permits.clone(),
            stop_rx.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (url, addr) = &args.urls[(g % nodes) as usize];
            let last = (args.src_from as u64 + (g / (nodes * args.per_ip)) % span) as u8;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let user = format!("{}{g}", args.prefix);
            let opened = {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                tokio::time::timeout(args.timeout, open(url, *addr, source, &user)).await
            };
            match opened {
                Ok(Ok(ws)) => {
                    counts.connected.fetch_add(1, Ordering::Relaxed);
                    if !hold(ws, stop_rx).await {
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                other => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    let reason = match other {
                        Ok(Err(e)) => e,
                        _ => format!("timed out after {:?}", args.timeout),
                    };
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(format!("{user} from {source} to {addr}: {reason}"));
                }
            }
        }));
    }

    // Connecting: bounded by count × timeout / concurrency, plus slack, in any case.
    let connect_limit = args
        .timeout
        .saturating_mul(args.count as u32 / args.concurrency as u32 + 2);
    let mut last_report = Instant::now();
    loop {
        let connected = counts.connected.load(Ordering::Relaxed);
        let failed = counts.failed.load(Ordering::Relaxed);
        if connected + failed >= args.count || started.elapsed() > connect_limit {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "hold_clients[{}]: {connected} connected, {failed} failed, {:.1} s",
                args.offset,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = counts.connected.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    if let Some(error) = first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        eprintln!("hold_clients[{}]: first failure: {error}", args.offset);
    }
    println!(
        r#"{{"event":"connected","offset":{},"count":{},"connected":{connected},"failed":{failed},"connect_seconds":{connect_seconds:.3},"done_unix_ms":{}}}"#,
        args.offset,
        args.count,
        unix_ms()
    );

    // Holding: HOLD seconds, or until the stop file appears.
    let hold_started = Instant::now();
    while hold_started.elapsed() < args.hold {
        if args.stop_file.as_ref().is_some_and(|path| path.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_seconds = hold_started.elapsed().as_secs_f64();
    let dropped_while_held = counts.dropped.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    // Closing: each connection closes within its 2 s; wait at most 30 s for all.
    let closing = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    let closed_in_time = tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .is_ok();
    println!(
        r#"{{"event":"done","offset":{},"connected":{connected},"failed":{failed},"connect_seconds":{connect_seconds:.3},"held_seconds":{held_seconds:.1},"dropped_while_held":{dropped_while_held},"closed_in_time":{closed_in_time}}}"#,
        args.offset
    );
    if failed == 0 && dropped_while_held == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
