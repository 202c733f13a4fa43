//! An echo server on this crate's WebSocket implementation, for conformance suites such as
//! Autobahn's fuzzing client: every text and binary message comes back as it came, with
//! the same handshake, framing, limits and close rules as [`WsServer`](crate::WsServer)'s
//! connections (no engine, no protocol v1).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! chat_transport_ws::conformance::echo(listener, 16 << 20).await
//! # }
//! ```

use std::io;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::net::{TcpListener, TcpStream};

use crate::handshake::{self, Pages};
use crate::server::WsConfig;
use crate::socket::{self, Msg, Read};
use crate::wire;

/// Accepts connections on `listener` forever, echoing messages of up to `max_message`
/// bytes (larger ones: close 1009) on any path.
pub async fn echo(listener: TcpListener, max_message: usize) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo_one(stream, max_message));
    }
}

async fn echo_one(mut stream: TcpStream, max_message: usize) {
    let config = WsConfig::default();
    let pages = Pages::new();
    // Any path: the suite picks its own.
    let handshake = handshake::accept_any_path(&mut stream, &config, &pages);
    let Ok(Ok(Some(early))) = tokio::time::timeout(Duration::from_secs(10), handshake).await else {
        return;
    };
    let (mut reader, writer) = socket::split(stream, early, max_message, 1 << 20, None);
    reader.keep_binary = true;
    while let Some(read) = poll_fn(|cx| reader.poll_read(cx)).await {
        match read {
            Read::Msg(Msg::Text(text)) => writer.queue(true, &text),
            Read::Msg(Msg::Binary(bytes)) => writer.queue(false, &bytes),
            Read::Msg(Msg::Heartbeat) => continue,
            Read::TooLarge => {
                writer.queue_close(wire::CLOSE_TOO_BIG, "message too big");
                break;
            }
        }
        if poll_fn(|cx| writer.flush(cx)).await.is_err() {
            return;
        }
    }
    // What the reader queued last (the echo of a close) goes out before the socket closes.
    let _ = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| writer.flush(cx))).await;
}
