//! One client connection to a server under test, whatever its protocol: set up (hello,
//! joins, resume) as a whole, then split into a sending half and a receiving half so that
//! one task can read while others send.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;

/// Errors of the load tool (not a library: a boxed error with a message is enough).
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Results of the load tool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The servers the tool compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// chat-engine: protocol v1 (`examples/server.rs` semantics, in-memory store).
    Chat,
    /// A minimal tokio-tungstenite broadcast server written for the benchmark (the floor).
    Raw,
    /// socket.io 4 on Node (`benches/peers/socketio`).
    SocketIo,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat-engine",
            Kind::Raw => "raw-tungstenite",
            Kind::SocketIo => "socket.io",
        }
    }
}

/// A message as a receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub room: String,
    /// The room's sequence number, where the protocol has one.
    pub seq: Option<u64>,
    pub body: String,
}

/// What to do when connecting.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Rooms to join (each confirmed before `connect` returns).
    pub join: Vec<String>,
    /// Where to resume from (a previous connection's [`Rx::resume`]); the missed messages
    /// then arrive through [`Rx::next`].
    pub resume: Option<Resume>,
    /// Skip the server's echo of this client's own messages (chat-engine echoes every
    /// message to its sender; the peers here do not echo direct messages).
    pub skip_own: bool,
}

/// A point to resume from, per protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// chat-engine: the room's epoch and the last seq received.
    Chat {
        room: String,
        epoch: String,
        seq: u64,
    },
    /// raw: the room and the last seq received.
    Raw { room: String, seq: u64 },
    /// socket.io connection state recovery: the session's private id and the last offset.
    SocketIo { pid: String, offset: String },
}

/// The sending half.
#[async_trait]
pub trait Tx: Send {
    /// Queues `body` for `room` (no waiting for an acknowledgement).
    async fn send_room(&mut self, room: &str, body: &str) -> Result<()>;
    /// Queues `body` for `user` (a direct message).
    async fn send_user(&mut self, user: &str, body: &str) -> Result<()>;
}

/// The receiving half.
#[async_trait]
pub trait Rx: Send {
    /// The next message delivered (other frames are handled or skipped); `None` when the
    /// connection closed.
    async fn next(&mut self) -> Result<Option<Delivered>>;
    /// Where a new connection should resume from to get what this one has not received.
    fn resume(&self) -> Option<Resume>;
}

/// A connected, set-up client.
pub struct Conn {
    pub tx: Box<dyn Tx>,
    pub rx: Box<dyn Rx>,
}

/// Opens a TCP connection from `source` (127.0.0.x spreads ephemeral ports over several
/// addresses) to `addr`.
pub async fn tcp_from(source: IpAddr, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The small-buffer WebSocket settings every client uses (so that 10,000 of them fit).
pub fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Connects a client of `kind` as `user`.
pub async fn connect(
    kind: Kind,
    addr: SocketAddr,
    user: &str,
    source: IpAddr,
    setup: Setup,
) -> Result<Conn> {
    match kind {
        Kind::Chat => crate::chat::connect(addr, user, source, setup).await,
        Kind::Raw => crate::raw::connect(addr, user, source, setup).await,
        Kind::SocketIo => crate::socketio::connect(addr, user, source, setup).await,
    }
}

/// The top-level fields of a JSON object's text, in one pass and without allocating: the
/// clients read every delivery this way, and the load generator shares the cores with the
/// server it measures. Yields each key with its raw value (a string value without its
/// quotes, escapes left as they are); stops at the first thing it does not understand.
pub fn json_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let bytes = text.as_bytes();
    let mut at = usize::from(bytes.first() == Some(&b'{'));
    if at == 0 {
        at = bytes.len();
    }
    std::iter::from_fn(move || {
        // `"key":`
        while at < bytes.len() && matches!(bytes[at], b',' | b' ') {
            at += 1;
        }
        let key_start = at.checked_add(1).filter(|_| bytes.get(at) == Some(&b'"'))?;
        let key_end = key_start + memchr::memchr(b'"', &bytes[key_start..])?;
        if bytes.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let start = key_end + 2;
        let (value, next) = match *bytes.get(start)? {
            b'"' => {
                let end = string_end(bytes, start + 1)?;
                (&text[start + 1..end], end + 1)
            }
            open @ (b'{' | b'[') => {
                let end = nested_end(bytes, start, open)?;
                (&text[start..end], end)
            }
            _ => {
                let end = start
                    + bytes[start..]
                        .iter()
                        .position(|b| matches!(b, b',' | b'}'))?;
                (&text[start..end], end)
            }
        };
        at = next;
        Some((&text[key_start..key_end], value))
    })
}

/// The index of the quote that closes a string whose text starts at `from`.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let end = from + memchr::memchr(b'"', &bytes[from..])?;
        let backslashes = bytes[from..end]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(end);
        }
        from = end + 1;
    }
}

/// The index just past the object or array that opens at `start`.
fn nested_end(bytes: &[u8], start: usize, open: u8) -> Option<usize> {
    let close = if open == b'{' { b'}' } else { b']' };
    let (mut depth, mut at) = (0usize, start);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(bytes, at + 1)?,
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
    None
}

/// Finds `"key":"…"` in a JSON object's text and returns the string (escapes left as they
/// are: the tool sends only plain ASCII bodies and ids).
pub fn json_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    json_fields(text).find_map(|(k, v)| (k == key).then_some(v))
}
