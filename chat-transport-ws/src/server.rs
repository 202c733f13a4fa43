//! The standalone WebSocket listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chat_core::Engine;
use chat_core::engine::Peer;
use futures_util::{SinkExt, StreamExt, future};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::adapt::{self, Incoming};

/// Settings of the listener. The engine's own limits (frame size, heartbeats, …) live in
/// its [`EngineConfig`](chat_core::EngineConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// The path of the WebSocket route (default `/ws`); other paths get 404.
    pub path: String,
    /// How long the TCP connection may take to complete the WebSocket handshake
    /// (default 10 s).
    pub handshake_timeout: Duration,
    /// Read buffer per connection (default 512 bytes, not tungstenite's 128 KiB): chat
    /// frames are small, and an idle connection keeps its buffer.
    pub read_buffer: usize,
    /// Bytes buffered before a write goes to the socket (default 16 KiB); each batch of
    /// frames is flushed at once anyway.
    pub write_buffer: usize,
    /// On shutdown, how long connections may take to say goodbye (default 10 s: longer
    /// than the engine's own 5 s deadline for a close, so sessions end by themselves).
    pub shutdown_grace: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: "/ws".to_owned(),
            handshake_timeout: Duration::from_secs(10),
            read_buffer: 512,
            write_buffer: 16 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A WebSocket listener serving one [`Engine`].
#[derive(Debug)]
pub struct WsServer {
    listener: TcpListener,
    engine: Engine,
    config: WsConfig,
}

impl WsServer {
    /// Binds `addr` (use port 0 for any free port).
    pub async fn bind(addr: impl ToSocketAddrs, engine: Engine) -> io::Result<WsServer> {
        Ok(WsServer::from_listener(
            TcpListener::bind(addr).await?,
            engine,
        ))
    }

    /// Serves on a listener the caller bound.
    pub fn from_listener(listener: TcpListener, engine: Engine) -> WsServer {
        WsServer {
            listener,
            engine,
            config: WsConfig::default(),
        }
    }

    /// Replaces the listener's settings.
    pub fn with_config(mut self, config: WsConfig) -> WsServer {
        self.config = config;
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
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        connections.spawn(connection(engine.clone(), config.clone(), stream, addr));
                    }
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
        let drained = tokio::time::timeout(config.shutdown_grace, async {
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

fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// One TCP connection: admission, handshake, then the engine's session.
async fn connection(engine: Engine, config: WsConfig, stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let admission = engine.admit();
    let max_frame = engine.config().max_frame_bytes;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer)
        .write_buffer_size(config.write_buffer)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let admitted = admission.is_ok();
    let path = config.path.as_str();
    // tungstenite's callback signature: its error type is the whole HTTP response.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| {
        if request.uri().path() != path {
            return Err(refusal(StatusCode::NOT_FOUND, "no such route"));
        }
        if !admitted {
            return Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is full or shutting down",
            ));
        }
        Ok(response)
    };
    // Boxed: the handshake's buffers and state are freed once it is done, leaving the
    // connection's task small.
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check,
        Some(ws_config),
    ));
    let ws = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "handshake timed out");
            return;
        }
    };
    let Ok(admission) = admission else {
        return;
    };
    let (sink, stream) = ws.split();
    let inbound = Incoming::new(stream, adapt::inbound);
    let outbound = sink.with(|item| future::ready(Ok::<_, Error>(adapt::outbound(item))));
    engine
        .serve(admission, Peer { addr: Some(addr) }, inbound, outbound)
        .await;
}
