//! The chat route for an axum application.
//!
//! ```no_run
//! # async fn app(engine: chat_core::Engine) {
//! use axum::{Router, routing::get};
//!
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .merge(chat_transport_ws::axum::router(engine, "/ws"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chat_core::Engine;
use chat_core::engine::{Inbound, Outbound, Peer};
use futures_util::{SinkExt, Stream, StreamExt, future};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::CapacityError;

/// A router with the chat route at `path`, to `merge` into any `Router<S>`.
pub fn router<S>(engine: Engine, path: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(
        path,
        get(move |upgrade: WebSocketUpgrade| {
            let engine = engine.clone();
            async move { handler(engine, upgrade) }
        }),
    )
}

/// Upgrades one request and serves it with `engine`: 503 when the engine is full or
/// shutting down.
pub fn handler(engine: Engine, upgrade: WebSocketUpgrade) -> Response {
    let Ok(admission) = engine.admit() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is full or shutting down",
        )
            .into_response();
    };
    let max_frame = engine.config().max_frame_bytes;
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            let inbound = Incoming::new(stream, inbound);
            let outbound = sink.with(|item| future::ready(Ok::<_, axum::Error>(outbound(item))));
            engine
                .serve(admission, Peer::default(), inbound, outbound)
                .await;
        })
}

fn inbound(read: Result<Message, axum::Error>) -> Option<Inbound> {
    match read {
        Ok(Message::Text(text)) => Some(Inbound::Text(Bytes::from(text))),
        Ok(Message::Binary(_)) => Some(Inbound::Binary),
        Ok(Message::Ping(_) | Message::Pong(_)) => Some(Inbound::Heartbeat),
        Ok(Message::Close(_)) => None,
        Err(e) => {
            // axum wraps tungstenite's error (the same version: see the workspace pin).
            let inner = e.into_inner();
            let too_large = inner.downcast_ref::<Error>().is_some_and(is_too_large);
            too_large.then_some(Inbound::TooLarge)
        }
    }
}

fn outbound(item: Outbound) -> Message {
    match item {
        // The engine's frames are serde_json output: always valid UTF-8.
        Outbound::Frame(frame) => {
            Message::Text(Utf8Bytes::try_from(frame.into_bytes()).unwrap_or_default())
        }
        Outbound::Close(code) => Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        })),
        _ => Message::Ping(Bytes::new()),
    }
}

/// Whether a read failed because a message or frame was over the limit.
fn is_too_large(e: &Error) -> bool {
    matches!(e, Error::Capacity(CapacityError::MessageTooLong { .. }))
}

/// Maps a stream of reads to engine frames with `map`, ending after a close, an error, or
/// a frame that was too large.
struct Incoming<S, F> {
    inner: S,
    map: F,
    done: bool,
}

impl<S, F> Incoming<S, F> {
    fn new(inner: S, map: F) -> Self {
        Incoming {
            inner,
            map,
            done: false,
        }
    }
}

impl<S, F> Stream for Incoming<S, F>
where
    S: Stream + Unpin,
    F: FnMut(S::Item) -> Option<Inbound> + Unpin,
{
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let read = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => None,
                Poll::Ready(Some(read)) => (self.map)(read),
            };
            match read {
                None => self.done = true,
                Some(Inbound::TooLarge) => {
                    self.done = true;
                    return Poll::Ready(Some(Inbound::TooLarge));
                }
                Some(frame) => return Poll::Ready(Some(frame)),
            }
        }
    }
}
