//! An in-process TCP fault proxy between clients and a server: it forwards bytes both ways
//! and, on command, cuts connections abruptly, stalls them (sockets stay open, nothing
//! moves: half-open until a heartbeat notices), delays them, refuses new ones, or points
//! at a new server (after a restart).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How one connection is being treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flowing,
    /// Nothing moves either way.
    Stalled,
    /// Client → server flows; server → client holds (requests arrive, replies do not).
    StalledDown,
    Cut,
}

struct Link {
    mode: watch::Sender<Mode>,
}

struct State {
    upstream: Mutex<SocketAddr>,
    links: Mutex<HashMap<u64, Link>>,
    next: AtomicU64,
    refusing: AtomicBool,
    delay_ms: AtomicU64,
    accepted: AtomicU64,
}

/// The proxy; dropping it stops accepting (open links end when cut or when a side closes).
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

impl FaultProxy {
    /// A proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            links: Mutex::default(),
            next: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        FaultProxy {
            addr,
            state,
            accept,
        }
    }

    /// `ws://…/ws` through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forward new connections to another server (the old links stay as they are).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock() = upstream;
    }

    /// How many links are open.
    pub fn links(&self) -> usize {
        self.state.links.lock().len()
    }

    /// How many connections were accepted in all.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Cuts every open link at once: both sockets dropped, no close handshake.
    pub fn cut_all(&self) {
        for (_, link) in self.state.links.lock().drain() {
            let _ = link.mode.send(Mode::Cut);
        }
    }

    /// Cuts the `n`th open link (in no particular order), if there is one.
    pub fn cut_nth(&self, n: usize) -> bool {
        let mut links = self.state.links.lock();
        let Some(&id) = links.keys().nth(n % links.len().max(1)) else {
            return false;
        };
        if let Some(link) = links.remove(&id) {
            let _ = link.mode.send(Mode::Cut);
        }
        true
    }

    /// Stalls the `n`th open link: it stays open but nothing moves either way, until the
    /// server's or the client's heartbeat gives up on it (then it is cut here too).
    pub fn stall_nth(&self, n: usize) -> bool {
        let links = self.state.links.lock();
        let Some(link) = links.values().nth(n % links.len().max(1)) else {
            return false;
        };
        let _ = link.mode.send(Mode::Stalled);
        true
    }

    /// Stalls every open link (see [`FaultProxy::stall_nth`]).
    pub fn stall_all(&self) {
        for link in self.state.links.lock().values() {
            let _ = link.mode.send(Mode::Stalled);
        }
    }

    /// Holds what the server sends on every open link, while what clients send still
    /// reaches it: requests take effect, their replies wait.
    pub fn stall_down_all(&self) {
        for link in self.state.links.lock().values() {
            let _ = link.mode.send(Mode::StalledDown);
        }
    }

    /// Every chunk waits this long before it is forwarded (0: none).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Refuse new connections (they are accepted and dropped at once).
    pub fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::Relaxed);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.refusing.load(Ordering::Relaxed) {
            drop(client);
            continue;
        }
        state.accepted.fetch_add(1, Ordering::Relaxed);
        let upstream = *state.upstream.lock();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            for socket in [&client, &server] {
                let _ = socket.set_nodelay(true);
                // A cut resets the connection (RST), as a dead network path would.
                #[allow(deprecated)]
                let _ = socket.set_linger(Some(Duration::ZERO));
            }
            let id = state.next.fetch_add(1, Ordering::Relaxed);
            let (mode_tx, mode_rx) = watch::channel(Mode::Flowing);
            state.links.lock().insert(id, Link { mode: mode_tx });
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(
                client_read,
                server_write,
                mode_rx.clone(),
                state.clone(),
                false,
            );
            let down = pump(server_read, client_write, mode_rx, state.clone(), true);
            // Either direction ending (a side closed, or a cut) ends the link.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
            state.links.lock().remove(&id);
        });
    }
}

/// Copies one direction until EOF, an error, or a cut; holds still while stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    state: Arc<State>,
    down: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait while stalled; stop when cut.
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Flowing => break,
                Mode::StalledDown if !down => break,
                Mode::Cut => return,
                Mode::Stalled | Mode::StalledDown => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = state.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if *mode.borrow() == Mode::Cut || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
