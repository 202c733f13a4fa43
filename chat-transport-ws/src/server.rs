//! The standalone WebSocket listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use chat_core::Engine;
use chat_core::engine::{Admission, Peer};
use futures_util::FutureExt;
use futures_util::future::{self, Either};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinSet;

use crate::handshake::{self, Page, Pages};
use crate::socket;

/// Settings of the listener. The engine's own limits (message size, heartbeats, …) live in
/// its [`EngineConfig`](chat_core::EngineConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// The path of the WebSocket route (default `/ws`); other paths get 404, unless they
    /// are pages ([`WsServer::with_page`]).
    pub path: String,
    /// How long the TCP connection may take to complete the WebSocket handshake
    /// (default 10 s).
    pub handshake_timeout: Duration,
    /// The largest HTTP request head accepted, in bytes (default 8 KiB); larger heads get
    /// 431.
    pub max_header_bytes: usize,
    /// The most header fields a request may have (default 64); more get 431.
    pub max_headers: usize,
    /// Bytes of written frames that may wait before the engine is made to flush (default
    /// 16 KiB); each batch of frames is flushed at once anyway.
    pub write_buffer: usize,
    /// The origins a browser may open the WebSocket from, exactly as browsers send them
    /// (`https://chat.example.com`, `http://127.0.0.1:8080`; compared without regard to
    /// ASCII case). Empty (the default): any origin. A request whose `Origin` is not
    /// listed gets 403 before the upgrade, which stops other sites from opening a
    /// WebSocket with a visitor's cookies (cross-site WebSocket hijacking). Requests
    /// without `Origin` (not from a browser) are not affected.
    pub allowed_origins: Vec<String>,
    /// The most connections one IP address may hold at once, handshakes included
    /// (default 1,000). One more is answered 503 and closed at once, before its request
    /// is read. The engine's own cap ([`EngineConfig`](chat_core::EngineConfig)) bounds
    /// them all.
    pub max_connections_per_ip: usize,
    /// On shutdown, how long connections may take to say goodbye (default 10 s: longer
    /// than the engine's own 5 s deadline for a close, so sessions end by themselves).
    pub shutdown_grace: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: "/ws".to_owned(),
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            write_buffer: 16 * 1024,
            allowed_origins: Vec::new(),
            max_connections_per_ip: 1_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A WebSocket listener serving one [`Engine`], and optionally a few static pages.
///
/// The WebSocket side is this crate's own RFC 6455 implementation: each frame the engine
/// encoded once is written with a small header straight onto the socket, and an idle
/// connection holds no read or write buffer.
#[derive(Debug)]
pub struct WsServer {
    listener: TcpListener,
    engine: Engine,
    config: WsConfig,
    pages: Pages,
}

impl WsServer {
    /// Binds `addr` (use port 0 for any free port), with a listen backlog of 4,096 so
    /// that a burst of connections waits in the kernel's queue instead of overflowing it
    /// (the system's `somaxconn` may lower it; tokio's default is 128).
    pub async fn bind(addr: impl ToSocketAddrs, engine: Engine) -> io::Result<WsServer> {
        let mut last = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr) {
                Ok(listener) => return Ok(WsServer::from_listener(listener, engine)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        }))
    }

    /// Serves on a listener the caller bound.
    pub fn from_listener(listener: TcpListener, engine: Engine) -> WsServer {
        WsServer {
            listener,
            engine,
            config: WsConfig::default(),
            pages: Pages::new(),
        }
    }

    /// Replaces the listener's settings.
    pub fn with_config(mut self, config: WsConfig) -> WsServer {
        self.config = config;
        self
    }

    /// Serves `body` at `path` (e.g. `/` or `/app.js`) to a plain `GET` or `HEAD`, with
    /// this `Content-Type`, `Cache-Control: no-cache` and `X-Content-Type-Options:
    /// nosniff`; the connection closes after the response. Meant for a chat page next to
    /// its WebSocket route, not as a web server.
    pub fn with_page(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> WsServer {
        self.pages.insert(
            path.into(),
            Page {
                content_type: content_type.into(),
                body: body.into(),
            },
        );
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, closes every session with 1001 after what is queued for it, and waits up
    /// to `shutdown_grace` for connections to end.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let WsServer {
            listener,
            engine,
            config,
            pages,
        } = self;
        let per_ip = PerIp::new(config.max_connections_per_ip);
        let settings = Arc::new((config, pages));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => match per_ip.take(addr.ip()) {
                        Some(slot) => {
                            let (engine, settings) = (engine.clone(), settings.clone());
                            connections.spawn(connection(engine, settings, stream, addr, slot));
                        }
                        None => {
                            tracing::debug!(%addr, "connections per IP address at the cap: refused");
                            // Best effort, without waiting: this peer gets no more of our time.
                            let _ = stream.try_write(TOO_MANY_FROM_IP);
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        engine.shutdown();
        let drained = tokio::time::timeout(settings.0.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                "shutdown grace over: dropping the rest"
            );
            connections.abort_all();
        }
        Ok(())
    }
}

const TOO_MANY_FROM_IP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
    Content-Length: 38\r\nConnection: close\r\n\r\ntoo many connections from this address";

/// The listen backlog of [`WsServer::bind`]: connections the kernel holds until they are
/// accepted. Tokio's default (128) overflows under a burst, and a connection that is never
/// accepted is never closed by the handshake deadline either.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections held per IP address, against a cap.
struct PerIp {
    cap: usize,
    held: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PerIp`], given back on drop.
pub(crate) struct IpSlot {
    ip: IpAddr,
    held: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn new(cap: usize) -> PerIp {
        PerIp {
            cap,
            held: Arc::default(),
        }
    }

    fn take(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut held = self.held.lock();
        if held.get(&ip).is_some_and(|&count| count >= self.cap) || self.cap == 0 {
            return None;
        }
        *held.entry(ip).or_default() += 1;
        Some(IpSlot {
            ip,
            held: self.held.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// One TCP connection: admission, handshake, then the engine's session. Built from two
/// futures in sequence rather than one `async fn`, so that a connection's task holds only
/// the session once the handshake is over.
fn connection(
    engine: Engine,
    settings: Arc<(WsConfig, Pages)>,
    stream: TcpStream,
    addr: SocketAddr,
    slot: IpSlot,
) -> impl Future<Output = ()> + Send {
    Box::pin(upgrade(engine, settings, stream, addr, slot)).then(|upgraded| match upgraded {
        Some((engine, admission, inbound, outbound, addr)) => {
            Either::Left(engine.serve(admission, Peer { addr: Some(addr) }, inbound, outbound))
        }
        None => Either::Right(future::ready(())),
    })
}

/// Admission and handshake: the session's parts, or `None` when the connection was
/// answered otherwise (a page, a refusal) or failed.
async fn upgrade(
    engine: Engine,
    settings: Arc<(WsConfig, Pages)>,
    mut stream: TcpStream,
    addr: SocketAddr,
    slot: IpSlot,
) -> Option<(
    Engine,
    Admission,
    socket::Reader,
    socket::Writer,
    SocketAddr,
)> {
    let _ = stream.set_nodelay(true);
    let (config, pages) = &*settings;
    let admission = engine.admit();
    let handshake = handshake::accept(&mut stream, config, pages, admission.is_ok());
    let early = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(Some(early))) => early,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%addr, "handshake timed out");
            return None;
        }
    };
    let admission = admission.ok()?;
    let max_message = engine.config().max_frame_bytes;
    // The socket holds the address's place until both halves are gone.
    let (inbound, outbound) =
        socket::split(stream, early, max_message, config.write_buffer, Some(slot));
    Some((engine, admission, inbound, outbound, addr))
}
