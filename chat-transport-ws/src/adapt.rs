//! tokio-tungstenite messages ↔ the engine's `Inbound` / `Outbound`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use chat_core::engine::{Inbound, Outbound};
use futures_util::Stream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};

/// What one read means to the engine; `None` ends the stream.
pub(crate) fn inbound(read: Result<Message, Error>) -> Option<Inbound> {
    match read {
        Ok(Message::Text(text)) => Some(Inbound::Text(Bytes::from(text))),
        Ok(Message::Binary(_)) => Some(Inbound::Binary),
        Ok(Message::Ping(_) | Message::Pong(_)) => Some(Inbound::Heartbeat),
        Ok(Message::Frame(_)) => Some(Inbound::Heartbeat),
        Ok(Message::Close(_)) => None,
        Err(e) if is_too_large(&e) => Some(Inbound::TooLarge),
        Err(_) => None,
    }
}

/// Whether a read failed because a message or frame was over the limit.
pub(crate) fn is_too_large(e: &Error) -> bool {
    matches!(e, Error::Capacity(CapacityError::MessageTooLong { .. }))
}

/// The message to write for an engine item.
pub(crate) fn outbound(item: Outbound) -> Message {
    match item {
        // The engine's frames are serde_json output: always valid UTF-8.
        Outbound::Frame(frame) => {
            Message::Text(Utf8Bytes::try_from(frame.into_bytes()).unwrap_or_default())
        }
        Outbound::Ping => Message::Ping(Bytes::new()),
        Outbound::Close(code) => Message::Close(Some(CloseFrame {
            code: WsCloseCode::from(code.code()),
            reason: Utf8Bytes::from_static(code.reason()),
        })),
        // `Outbound` is non-exhaustive: anything newer is a heartbeat at worst.
        #[allow(unreachable_patterns)]
        _ => Message::Ping(Bytes::new()),
    }
}

/// Maps a stream of reads to engine frames with `map`, ending after a close, an error, or
/// a frame that was too large.
pub(crate) struct Incoming<S, F> {
    inner: S,
    map: F,
    done: bool,
}

impl<S, F> Incoming<S, F> {
    pub(crate) fn new(inner: S, map: F) -> Self {
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
