//! The socket.io 4 client side (`benches/peers/socketio/server.js`): Engine.IO v4 and
//! socket.io protocol v5 spoken by hand over a raw WebSocket, default namespace only.
//!
//! Frames (one Engine.IO packet per WebSocket text frame):
//! - server `0{"sid":…,"pingInterval":…}` (Engine.IO open), client `40{"user":…}`
//!   (socket.io CONNECT with the auth object), server `40{"sid":…,"pid":…}`;
//! - resume (connection state recovery): client `40{"user":…,"pid":…,"offset":…}`; the
//!   server then writes the missed broadcasts *before* its `40{…}` reply, which carries the
//!   same `pid` when the session was recovered (a new one otherwise);
//! - server `2` (Engine.IO ping) every `pingInterval`, answered `3` by [`Rx::next`];
//! - client `42<id>["join","room"]`, server `43<id>[true]`;
//! - client `42["send",{"room":…,"body":…}]` and `42["dm",{"to":…,"body":…}]`;
//! - server `42["message",{"room":…,"body":…},"<offset>"]`: with recovery on, every
//!   broadcast carries its offset as the last argument.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::conn::{self, Conn, Delivered, Result, Resume, Rx, Setup, Tx};

type Ws = WebSocketStream<TcpStream>;
/// The writing half, shared: [`Rx::next`] writes the pongs.
type SharedSink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// Connects `user` to the socket.io server at `addr`, recovering the session of
/// `setup.resume` if given, and joins `setup.join` (every join acknowledged).
pub(crate) async fn connect(
    addr: SocketAddr,
    user: &str,
    source: IpAddr,
    setup: Setup,
) -> Result<Conn> {
    let stream = conn::tcp_from(source, addr).await?;
    let request =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket").into_client_request()?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(conn::client_config()))
            .await?;

    // Engine.IO open packet.
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err("socket.io: closed before the open packet".into());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        };
        if text.starts_with('0') {
            break;
        }
        return Err(format!("socket.io: expected the open packet, got {:?}", clip(&text)).into());
    }

    // socket.io CONNECT, with the recovery point if any.
    let mut packet = String::from("40{\"user\":");
    push_json_str(&mut packet, user);
    let mut sent_pid = None;
    let mut offset = String::new();
    match &setup.resume {
        None => {}
        Some(Resume::SocketIo { pid, offset: from }) => {
            packet.push_str(",\"pid\":");
            push_json_str(&mut packet, pid);
            packet.push_str(",\"offset\":");
            push_json_str(&mut packet, from);
            sent_pid = Some(pid.as_str());
            offset.push_str(from);
        }
        Some(other) => return Err(format!("socket.io: cannot resume from {other:?}").into()),
    }
    packet.push('}');
    ws.send(Message::text(packet)).await?;

    let mut rx = SioRx {
        stream: None,
        sink: None,
        pending: VecDeque::new(),
        pid: None,
        offset,
    };
    // Missed broadcasts (on recovery) arrive before the CONNECT reply: keep them.
    let pid = loop {
        let text = next_text(&mut ws).await?;
        match parse(&text)? {
            Frame::Connect(json) => break conn::json_str(json, "pid").map(str::to_owned),
            Frame::ConnectError(json) => {
                return Err(format!("socket.io: connect refused: {json}").into());
            }
            Frame::Ping(data) => ws.send(Message::text(format!("3{data}"))).await?,
            Frame::Message { room, body, offset } => rx.queue(room, body, offset),
            Frame::Close => return Err("socket.io: closed during the handshake".into()),
            Frame::Ack { .. } | Frame::Other => {}
        }
    };
    if sent_pid.is_some() && sent_pid != pid.as_deref() {
        // Not recovered (session expired or offset too old): a new session, whose
        // position is not the old one.
        rx.offset.clear();
    }
    rx.pid = pid;

    // Joins, pipelined: ack ids 0..n.
    for (id, room) in setup.join.iter().enumerate() {
        let mut packet = format!("42{id}[\"join\",");
        push_json_str(&mut packet, room);
        packet.push(']');
        ws.feed(Message::text(packet)).await?;
    }
    ws.flush().await?;
    let mut acked = vec![false; setup.join.len()];
    let mut missing = setup.join.len();
    while missing > 0 {
        let text = next_text(&mut ws).await?;
        match parse(&text)? {
            Frame::Ack { id, args } => {
                let slot = usize::try_from(id)
                    .ok()
                    .and_then(|i| acked.get_mut(i))
                    .ok_or_else(|| format!("socket.io: unexpected ack {id}"))?;
                if args != "[true]" {
                    return Err(format!("socket.io: join refused: {}", clip(&text)).into());
                }
                if !*slot {
                    *slot = true;
                    missing -= 1;
                }
            }
            Frame::Ping(data) => ws.send(Message::text(format!("3{data}"))).await?,
            Frame::Message { room, body, offset } => rx.queue(room, body, offset),
            Frame::Close => return Err("socket.io: closed while joining".into()),
            Frame::ConnectError(json) => {
                return Err(format!("socket.io: error while joining: {json}").into());
            }
            Frame::Connect(_) | Frame::Other => {}
        }
    }

    let (sink, stream) = ws.split();
    let sink = Arc::new(Mutex::new(sink));
    rx.stream = Some(stream);
    rx.sink = Some(Arc::clone(&sink));
    Ok(Conn {
        tx: Box::new(SioTx { sink }),
        rx: Box::new(rx),
    })
}

/// The next text frame during setup (before the split).
async fn next_text(ws: &mut Ws) -> Result<tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(_))) | None => {
                return Err("socket.io: connection closed during setup".into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

struct SioTx {
    sink: SharedSink,
}

#[async_trait]
impl Tx for SioTx {
    async fn send_room(&mut self, room: &str, body: &str) -> Result<()> {
        let mut packet = String::with_capacity(40 + room.len() + body.len());
        packet.push_str("42[\"send\",{\"room\":");
        push_json_str(&mut packet, room);
        packet.push_str(",\"body\":");
        push_json_str(&mut packet, body);
        packet.push_str("}]");
        self.sink.lock().await.send(Message::text(packet)).await?;
        Ok(())
    }

    async fn send_user(&mut self, user: &str, body: &str) -> Result<()> {
        let mut packet = String::with_capacity(40 + user.len() + body.len());
        packet.push_str("42[\"dm\",{\"to\":");
        push_json_str(&mut packet, user);
        packet.push_str(",\"body\":");
        push_json_str(&mut packet, body);
        packet.push_str("}]");
        self.sink.lock().await.send(Message::text(packet)).await?;
        Ok(())
    }
}

struct SioRx {
    /// `None` only during setup.
    stream: Option<SplitStream<Ws>>,
    /// `None` only during setup.
    sink: Option<SharedSink>,
    /// Messages received during setup.
    pending: VecDeque<Delivered>,
    /// The session's private id (from the CONNECT reply; absent if recovery is off).
    pid: Option<String>,
    /// The offset of the last broadcast received, empty if none (the buffer is reused).
    offset: String,
}

impl SioRx {
    fn note_offset(&mut self, offset: Option<&str>) {
        if let Some(offset) = offset {
            self.offset.clear();
            self.offset.push_str(offset);
        }
    }

    fn queue(&mut self, room: &str, body: &str, offset: Option<&str>) {
        self.note_offset(offset);
        self.pending.push_back(Delivered {
            room: room.to_owned(),
            seq: None,
            body: body.to_owned(),
        });
    }
}

#[async_trait]
impl Rx for SioRx {
    async fn next(&mut self) -> Result<Option<Delivered>> {
        if let Some(delivered) = self.pending.pop_front() {
            return Ok(Some(delivered));
        }
        let (Some(stream), Some(sink)) = (self.stream.as_mut(), self.sink.as_ref()) else {
            return Ok(None);
        };
        loop {
            let text = match stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(
                    Ok(Message::Close(_))
                    | Err(
                        tungstenite::Error::ConnectionClosed
                        | tungstenite::Error::AlreadyClosed
                        | tungstenite::Error::Protocol(
                            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                        ),
                    ),
                )
                | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            };
            match parse(&text)? {
                Frame::Message { room, body, offset } => {
                    let delivered = Delivered {
                        room: room.to_owned(),
                        seq: None,
                        body: body.to_owned(),
                    };
                    if let Some(offset) = offset {
                        self.offset.clear();
                        self.offset.push_str(offset);
                    }
                    return Ok(Some(delivered));
                }
                Frame::Ping(data) => {
                    let pong = if data.is_empty() {
                        Message::text("3")
                    } else {
                        Message::text(format!("3{data}"))
                    };
                    sink.lock().await.send(pong).await?;
                }
                Frame::Close => return Ok(None),
                Frame::ConnectError(json) => return Err(format!("socket.io: error: {json}").into()),
                Frame::Connect(_) | Frame::Ack { .. } | Frame::Other => {}
            }
        }
    }

    fn resume(&self) -> Option<Resume> {
        // socket.io can only recover from an offset it handed out: before the first
        // broadcast received there is nothing to resume from.
        let pid = self.pid.as_ref()?;
        if self.offset.is_empty() {
            return None;
        }
        Some(Resume::SocketIo {
            pid: pid.clone(),
            offset: self.offset.clone(),
        })
    }
}

/// An Engine.IO packet (with the socket.io packet inside, if any), borrowing the frame.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    /// Engine.IO ping (`2`), with its data (usually empty), to answer with a pong.
    Ping(&'a str),
    /// Engine.IO close (`1`) or socket.io DISCONNECT (`41`).
    Close,
    /// socket.io CONNECT (`40{…}`): the JSON object.
    Connect(&'a str),
    /// socket.io `CONNECT_ERROR` (`44{…}`): the JSON object.
    ConnectError(&'a str),
    /// socket.io ACK (`43<id>[…]`).
    Ack { id: u64, args: &'a str },
    /// socket.io EVENT `message`, with the broadcast's offset if recovery is on.
    Message {
        room: &'a str,
        body: &'a str,
        offset: Option<&'a str>,
    },
    /// Anything else (noop, other events, …).
    Other,
}

/// Parses one frame cheaply (no full JSON parse: bodies and ids hold no escapes).
fn parse(text: &str) -> Result<Frame<'_>> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'2') => Ok(Frame::Ping(&text[1..])),
        Some(b'1') => Ok(Frame::Close),
        Some(b'4') => match bytes.get(1) {
            Some(b'2') => parse_event(&text[2..]),
            Some(b'0') => Ok(Frame::Connect(&text[2..])),
            Some(b'1') => Ok(Frame::Close),
            Some(b'3') => {
                let rest = &text[2..];
                let digits = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                let id = rest[..digits]
                    .parse()
                    .map_err(|_| format!("socket.io: bad ack {:?}", clip(text)))?;
                Ok(Frame::Ack {
                    id,
                    args: &rest[digits..],
                })
            }
            Some(b'4') => Ok(Frame::ConnectError(&text[2..])),
            _ => Ok(Frame::Other),
        },
        Some(_) => Ok(Frame::Other),
        None => Err("socket.io: empty frame".into()),
    }
}

/// `["message",{"room":…,"body":…},"<offset>"]` (after `42`).
fn parse_event(rest: &str) -> Result<Frame<'_>> {
    let Some(args) = rest.strip_prefix("[\"message\",") else {
        return Ok(Frame::Other);
    };
    let malformed = || format!("socket.io: malformed message {:?}", clip(rest));
    let room = conn::json_str(args, "room").ok_or_else(malformed)?;
    let body = conn::json_str(args, "body").ok_or_else(malformed)?;
    // The offset is the last argument, a string: the frame then ends with `"]` (the
    // object argument ends with `}`).
    let offset = match args.strip_suffix("\"]") {
        Some(head) => {
            let start = head.rfind('"').ok_or_else(malformed)? + 1;
            Some(&head[start..])
        }
        None => None,
    };
    Ok(Frame::Message { room, body, offset })
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// The start of a frame, for error messages.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
