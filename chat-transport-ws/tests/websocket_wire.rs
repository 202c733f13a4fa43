//! The standalone listener's own RFC 6455 server side, driven over a raw TCP socket: the
//! HTTP requests are written by hand and every client frame is built (and masked) here, so
//! that what the server must do with malformed, fragmented, pipelined or trickled input is
//! checked byte for byte, without a WebSocket client library smoothing anything over.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chat_core::auth::DevAuthenticator;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use chat_transport_ws::{WsConfig, WsServer};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// How long a read may wait before the test fails: a guard against hanging only.
const WAIT: Duration = Duration::from_secs(10);

/// The example of RFC 6455 §1.3.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The masking key of the examples of RFC 6455 §5.7.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The engine's default `max_frame_bytes` (`chat-core/src/engine/config.rs`).
const MAX_MESSAGE: usize = 64 * 1024;

/// A listener with the in-memory backends and the dev authenticator.
async fn bind(config: WsConfig) -> WsServer {
    let engine = chat_store_memory::engine_builder(Arc::new(DevAuthenticator)).build();
    WsServer::bind("127.0.0.1:0", engine)
        .await
        .unwrap()
        .with_config(config)
}

/// Runs `server` until the test's runtime ends; returns its address.
fn serve(server: WsServer) -> SocketAddr {
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run_until(std::future::pending()));
    addr
}

/// A listener with the default settings.
async fn start() -> SocketAddr {
    serve(bind(WsConfig::default()).await)
}

/// `Sec-WebSocket-Accept` for `key`, as RFC 6455 §4.2.2 computes it.
fn accept_for(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// A correct upgrade request for `/ws`.
fn upgrade_request(key: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Appends a payload length, with `mask_bit` in the second byte, in the shortest form.
fn push_len(out: &mut Vec<u8>, mask_bit: u8, len: u64) {
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// A client frame: FIN, the three RSV bits (`rsv` in 0..=7), the opcode, the payload, masked
/// with `mask` (`None`: sent unmasked, which a client must never do).
fn frame_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(rsv < 8 && opcode < 16);
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    match mask {
        Some(key) => {
            push_len(&mut out, 0x80, payload.len() as u64);
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            push_len(&mut out, 0, payload.len() as u64);
            out.extend_from_slice(payload);
        }
    }
    out
}

/// A well-formed masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, payload, Some(MASK))
}

/// A whole (unfragmented) text message.
fn text(payload: &[u8]) -> Vec<u8> {
    frame(true, OP_TEXT, payload)
}

/// A close frame with `code` and `reason`.
fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, OP_CLOSE, &payload)
}

/// Only the header of a masked frame that declares `len` payload bytes.
fn header_only(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    push_len(&mut out, 0x80, len);
    out.extend_from_slice(&MASK);
    out
}

fn hello_json(user: &str, id: u64) -> String {
    json!({"type": "hello", "id": id, "token": format!("dev:{user}"), "resume": {}}).to_string()
}

fn assert_hello_reply(reply: &Value, user: &str, id: u64) {
    assert_eq!(reply["type"], "ok", "hello refused: {reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["user"], user, "{reply}");
}

/// A frame the server wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Frame {
    /// The code of a close frame.
    fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close: {self:?}");
        self.payload
            .get(..2)
            .map(|code| u16::from_be_bytes([code[0], code[1]]))
    }
}

/// Parses the frame at the start of `buf`: `None` until all of it is there.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let raw = buf.get(2..4)?;
            (u64::from(u16::from_be_bytes([raw[0], raw[1]])), 4)
        }
        127 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(raw), 10)
        }
        short => (u64::from(short), 2),
    };
    let key = if masked {
        let key = buf.get(at..at + 4)?;
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let end = at + usize::try_from(len).unwrap();
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(key) = key {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode: b0 & 0x0F,
        masked,
        payload,
    };
    Some((frame, end))
}

/// An HTTP response head.
#[derive(Debug)]
struct Response {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    /// The value of the header `name` (any case); panics if it is there twice.
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = found.next();
        assert!(found.next().is_none(), "{name} twice in {self:?}");
        first
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .unwrap_or_else(|| panic!("no Content-Length in {self:?}"))
            .parse()
            .unwrap()
    }
}

/// A raw TCP connection to the listener, with the bytes read and not yet consumed.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Conn {
            tcp,
            buf: Vec::new(),
        }
    }

    /// A connection upgraded with the RFC's key; checks the 101.
    async fn open(addr: SocketAddr) -> Conn {
        let mut conn = Conn::connect(addr).await;
        conn.send(upgrade_request(RFC_KEY).as_bytes()).await;
        let head = conn.read_head().await;
        assert_eq!(head.status, 101, "{head:?}");
        assert_eq!(head.header("sec-websocket-accept"), Some(RFC_ACCEPT));
        conn
    }

    /// An upgraded connection that said hello as `user`.
    async fn hello(addr: SocketAddr, user: &str) -> Conn {
        let mut conn = Conn::open(addr).await;
        conn.send(&text(hello_json(user, 1).as_bytes())).await;
        let reply = conn.read_json().await;
        assert_hello_reply(&reply, user, 1);
        conn
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
        self.tcp.flush().await.unwrap();
    }

    /// Sends `bytes` that the server may refuse before it read them all: it may then close
    /// the connection under the write, which is not an error here.
    async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
        let _ = self.tcp.flush().await;
    }

    /// Reads more bytes into `buf`; 0 once the server closed (a reset counts as closed).
    async fn fill(&mut self) -> usize {
        self.buf.reserve(16 * 1024);
        let read = tokio::time::timeout(WAIT, self.tcp.read_buf(&mut self.buf))
            .await
            .expect("the server neither sent anything nor closed in time");
        match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The response head; what follows it stays in `buf`.
    async fn read_head(&mut self) -> Response {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.fill().await == 0 {
                panic!(
                    "closed before a whole response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("an ASCII head");
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {line:?}"));
                (name.to_owned(), value.trim().to_owned())
            })
            .collect();
        Response {
            version,
            status,
            headers,
        }
    }

    /// The next server frame, or `None` once the server closed between frames.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, len)) = parse_frame(&self.buf) {
                self.buf.drain(..len);
                assert!(
                    !frame.masked,
                    "a server frame must not be masked: {frame:?}"
                );
                assert_eq!(frame.rsv, 0, "no extension was negotiated: {frame:?}");
                return Some(frame);
            }
            if self.fill().await == 0 {
                assert!(
                    self.buf.is_empty(),
                    "closed in the middle of a frame: {:?}",
                    self.buf
                );
                return None;
            }
        }
    }

    /// The next server frame; panics if the server closed.
    async fn read_frame(&mut self) -> Frame {
        self.next_frame()
            .await
            .expect("the server closed while a frame was awaited")
    }

    /// The next text message (skipping pongs), as JSON.
    async fn read_json(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                OP_PONG | OP_PING => continue,
                OP_TEXT => {
                    assert!(frame.fin, "the server does not fragment: {frame:?}");
                    return serde_json::from_slice(&frame.payload).unwrap();
                }
                _ => panic!(
                    "expected a text frame, got {frame:?} ({:?})",
                    String::from_utf8_lossy(&frame.payload)
                ),
            }
        }
    }

    /// Sends `request` with `id` and returns the reply with that id (skipping anything else).
    async fn request(&mut self, mut request: Value, id: u64) -> Value {
        request["id"] = json!(id);
        self.send(&text(request.to_string().as_bytes())).await;
        loop {
            let frame = self.read_json().await;
            if frame["id"] == id {
                return frame;
            }
        }
    }

    /// Checks that the connection still answers requests.
    async fn still_works(&mut self, id: u64) {
        let reply = self.request(json!({"type": "ping"}), id).await;
        assert_eq!(reply["type"], "ok", "{reply}");
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// The server closes the connection with nothing more.
    async fn expect_eof(&mut self) {
        let rest = self.read_to_end().await;
        assert!(
            rest.is_empty(),
            "nothing may follow, got {rest:?} ({:?})",
            String::from_utf8_lossy(&rest)
        );
    }

    /// The next frame is a close with `code` and a UTF-8 reason, then the TCP connection
    /// ends. Returns the reason.
    async fn expect_close(&mut self, code: u16) -> String {
        let frame = self.read_frame().await;
        assert_eq!(
            frame.opcode,
            OP_CLOSE,
            "expected a close {code}, got {frame:?} ({:?})",
            String::from_utf8_lossy(&frame.payload)
        );
        assert!(frame.fin && frame.payload.len() <= 125, "{frame:?}");
        assert_eq!(frame.close_code(), Some(code), "{frame:?}");
        let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("a UTF-8 reason");
        self.expect_eof().await;
        reason
    }
}

/// Sends `request` on a fresh connection; returns the response head and body, once the
/// server closed the connection (checked), with the body as long as `Content-Length` says.
async fn http(addr: SocketAddr, request: &[u8]) -> (Response, Vec<u8>) {
    let mut conn = Conn::connect(addr).await;
    conn.send(request).await;
    let head = conn.read_head().await;
    let body = conn.read_to_end().await;
    assert_eq!(head.version, "HTTP/1.1", "{head:?}");
    assert_eq!(body.len(), head.content_length(), "{head:?} {body:?}");
    (head, body)
}

/// `request` is refused with `status`, `Connection: close` and a plain-text body, and the
/// server closes the connection. Returns the head.
async fn refused(addr: SocketAddr, request: &[u8], status: u16) -> Response {
    let (head, body) = http(addr, request).await;
    assert_refusal(&head, &body, status, request);
    head
}

fn assert_refusal(head: &Response, body: &[u8], status: u16, request: &[u8]) {
    let request = String::from_utf8_lossy(&request[..request.len().min(200)]);
    assert_eq!(head.status, status, "{request:?}: {head:?}");
    assert_eq!(head.header("connection"), Some("close"), "{head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{head:?}"
    );
    assert!(!body.is_empty(), "a refusal says why");
    assert!(std::str::from_utf8(body).is_ok());
    assert_eq!(head.header("sec-websocket-accept"), None, "{head:?}");
}

// ---------------------------------------------------------------------------------------
// The helpers themselves
// ---------------------------------------------------------------------------------------

#[test]
fn the_frame_helpers_reproduce_the_examples_of_rfc_6455() {
    // §5.7: a masked "Hello" from a client, an unmasked one from a server.
    assert_eq!(
        text(b"Hello"),
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
    let (hello, len) = parse_frame(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]).unwrap();
    assert_eq!(len, 7);
    assert_eq!(
        (hello.fin, hello.opcode, hello.masked),
        (true, OP_TEXT, false)
    );
    assert_eq!(hello.payload, b"Hello");
    // A fragmented "Hel" "lo", and a 256-byte binary frame's 16-bit length.
    assert_eq!(
        frame_with(false, 0, OP_TEXT, b"Hel", None),
        [0x01, 0x03, 0x48, 0x65, 0x6c]
    );
    assert_eq!(
        frame_with(true, 0, OP_CONTINUATION, b"lo", None),
        [0x80, 0x02, 0x6c, 0x6f]
    );
    assert_eq!(
        frame_with(true, 0, OP_BINARY, &[0; 256], None)[..4],
        [0x82, 0x7E, 0x01, 0x00]
    );
    // A masked frame parses back (as the server would unmask it).
    let (back, _) = parse_frame(&frame(true, OP_PING, b"ping!")).unwrap();
    assert_eq!(
        (back.masked, back.opcode, &back.payload[..]),
        (true, OP_PING, &b"ping!"[..])
    );
    assert_eq!(header_only(true, OP_BINARY, 1 << 20)[..2], [0x82, 0xFF]);
    assert_eq!(accept_for(RFC_KEY), RFC_ACCEPT);
}

// ---------------------------------------------------------------------------------------
// 1. The upgrade
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_correct_upgrade_gets_101_with_the_accept_key_whatever_the_case_of_names() {
    let addr = start().await;
    // Header names in any case, tokens in any case and inside lists; an offered extension
    // that the server does not take up.
    let request = format!(
        "GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n\
         Connection: keep-alive, Upgrade\r\nsec-websocket-key: {RFC_KEY}\r\n\
         SEC-WEBSOCKET-VERSION: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    );
    let mut conn = Conn::connect(addr).await;
    conn.send(request.as_bytes()).await;
    let head = conn.read_head().await;
    assert_eq!(
        (head.version.as_str(), head.status),
        ("HTTP/1.1", 101),
        "{head:?}"
    );
    assert!(
        head.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head:?}"
    );
    assert!(
        head.header("connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "{head:?}"
    );
    assert_eq!(head.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    assert_eq!(
        head.header("sec-websocket-extensions"),
        None,
        "no extension is negotiated: {head:?}"
    );
    assert!(conn.buf.is_empty(), "nothing follows the 101 unasked");
    // And the WebSocket speaks.
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);

    // Another key: the accept is computed, not a constant.
    let key = base64::engine::general_purpose::STANDARD.encode((100u8..116).collect::<Vec<_>>());
    let mut other = Conn::connect(addr).await;
    other.send(upgrade_request(&key).as_bytes()).await;
    let head = other.read_head().await;
    assert_eq!(head.status, 101, "{head:?}");
    let expected = accept_for(&key);
    assert_ne!(expected, RFC_ACCEPT);
    assert_eq!(head.header("sec-websocket-accept"), Some(expected.as_str()));
}

// ---------------------------------------------------------------------------------------
// 2. Pipelining
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hello_sent_in_the_same_write_as_the_request_is_answered() {
    let addr = start().await;
    let mut conn = Conn::connect(addr).await;
    let mut bytes = upgrade_request(RFC_KEY).into_bytes();
    bytes.extend_from_slice(&text(hello_json("alice", 1).as_bytes()));
    conn.send(&bytes).await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 101, "{head:?}");
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    conn.still_works(2).await;
}

// ---------------------------------------------------------------------------------------
// 3. Fragmentation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_in_three_fragments_with_pings_between_them_is_reassembled() {
    let addr = start().await;
    let mut conn = Conn::open(addr).await;
    // A hello with an unknown field (ignored by the protocol) holding a euro sign, cut in
    // the middle of its three UTF-8 bytes: only the whole message need be UTF-8.
    let hello = r#"{"type":"hello","id":1,"token":"dev:alice","resume":{},"note":"5 €"}"#;
    let euro = hello.find('€').unwrap();
    let (first, rest) = hello.as_bytes().split_at(20);
    let (second, third) = rest.split_at(euro + 1 - 20);
    assert!(
        std::str::from_utf8(third).is_err(),
        "the cut is inside the €"
    );

    conn.send(&frame(false, OP_TEXT, first)).await;
    conn.send(&frame(true, OP_PING, b"between 1 and 2")).await;
    let pong = conn.read_frame().await;
    assert_eq!(
        (pong.fin, pong.opcode, &pong.payload[..]),
        (true, OP_PONG, &b"between 1 and 2"[..]),
        "{pong:?}"
    );
    conn.send(&frame(false, OP_CONTINUATION, second)).await;
    conn.send(&frame(true, OP_PING, b"")).await;
    let pong = conn.read_frame().await;
    assert_eq!((pong.opcode, pong.payload.len()), (OP_PONG, 0), "{pong:?}");
    // An unsolicited pong is allowed anywhere too, and needs no answer.
    conn.send(&frame(true, OP_PONG, b"unsolicited")).await;
    conn.send(&frame(true, OP_CONTINUATION, third)).await;
    let reply = conn.read_frame().await;
    assert_eq!(reply.opcode, OP_TEXT, "{reply:?}");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_hello_reply(&reply, "alice", 1);

    // After it, a new fragmented message (of one fragment and an empty last one) works.
    conn.send(&frame(false, OP_TEXT, br#"{"type":"ping","id":2}"#))
        .await;
    conn.send(&frame(true, OP_CONTINUATION, b"")).await;
    let reply = conn.read_json().await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("ok"), &json!(2)));
}

// ---------------------------------------------------------------------------------------
// 4. Trickled bytes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_frame_written_one_byte_at_a_time_is_parsed() {
    let addr = start().await;
    let mut conn = Conn::open(addr).await;
    // Over 125 bytes, so that the 16-bit length is cut too.
    let hello = json!({
        "type": "hello", "id": 1, "token": "dev:alice", "resume": {},
        "padding": "x".repeat(150),
    })
    .to_string();
    let bytes = text(hello.as_bytes());
    assert_eq!(bytes[1], 0x80 | 126);
    for byte in &bytes {
        conn.tcp
            .write_all(std::slice::from_ref(byte))
            .await
            .unwrap();
        conn.tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    conn.still_works(2).await;
}

// ---------------------------------------------------------------------------------------
// 5. The closing handshake
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_close_is_echoed_then_the_connection_ends() {
    let addr = start().await;
    // After hello: 1000 with a reason is echoed as 1000.
    let mut conn = Conn::hello(addr, "alice").await;
    conn.send(&close(1000, b"bye now")).await;
    conn.expect_close(1000).await;

    // Before hello too.
    let mut conn = Conn::open(addr).await;
    conn.send(&close(1000, b"")).await;
    conn.expect_close(1000).await;

    // An application code is echoed as it is.
    let mut conn = Conn::hello(addr, "bob").await;
    conn.send(&close(4000, "fini ✓".as_bytes())).await;
    conn.expect_close(4000).await;

    // A close between the fragments of a message (control frames may come there).
    let mut conn = Conn::hello(addr, "dave").await;
    conn.send(&frame(false, OP_TEXT, br#"{"type":"#)).await;
    conn.send(&close(1001, b"going away")).await;
    conn.expect_close(1001).await;

    // A close without a code: answered with a close (no code, or 1000), then the end.
    let mut conn = Conn::hello(addr, "carol").await;
    conn.send(&frame(true, OP_CLOSE, b"")).await;
    let answer = conn.read_frame().await;
    assert_eq!(answer.opcode, OP_CLOSE, "{answer:?}");
    assert!(
        answer.payload.is_empty() || answer.close_code() == Some(1000),
        "{answer:?}"
    );
    conn.expect_eof().await;
}

// ---------------------------------------------------------------------------------------
// 6. Protocol violations
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let addr = start().await;
    let hello = hello_json("x", 9);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an unmasked frame",
            frame_with(true, 0, OP_TEXT, hello.as_bytes(), None),
        ),
        (
            "RSV1 set",
            frame_with(true, 0b100, OP_TEXT, hello.as_bytes(), Some(MASK)),
        ),
        (
            "RSV3 set on a ping",
            frame_with(true, 0b001, OP_PING, b"", Some(MASK)),
        ),
        ("reserved opcode 3", frame(true, 0x3, b"data")),
        ("reserved opcode 0xB", frame(true, 0xB, b"")),
        ("a fragmented ping", frame(false, OP_PING, b"ping")),
        ("a ping of 126 bytes", frame(true, OP_PING, &[b'p'; 126])),
        ("a close of 126 bytes", {
            let mut payload = 1000u16.to_be_bytes().to_vec();
            payload.extend_from_slice(&[b'r'; 124]);
            frame(true, OP_CLOSE, &payload)
        }),
        (
            "a continuation without a start",
            frame(true, OP_CONTINUATION, br#"{"type":"ping"}"#),
        ),
        ("a new text message inside a fragmented one", {
            let mut bytes = frame(false, OP_TEXT, br#"{"type":"#);
            bytes.extend(text(br#"{"type":"ping","id":5}"#));
            bytes
        }),
        ("a new binary message inside a fragmented one", {
            let mut bytes = frame(false, OP_TEXT, br#"{"type":"#);
            bytes.extend(frame(true, OP_BINARY, b"\x01"));
            bytes
        }),
        (
            "a close with a one-byte payload",
            frame(true, OP_CLOSE, &[0x03]),
        ),
        ("close code 1005", close(1005, b"")),
        ("close code 1006", close(1006, b"")),
        ("close code 999", close(999, b"")),
        ("close code 5000", close(5000, b"")),
        ("close code 0", close(0, b"")),
        (
            "a 64-bit length with its top bit set",
            header_only(true, OP_BINARY, 1 << 63),
        ),
    ];
    for hello_first in [true, false] {
        for (name, bytes) in &cases {
            let mut conn = if hello_first {
                Conn::hello(addr, "alice").await
            } else {
                Conn::open(addr).await
            };
            conn.send(bytes).await;
            let frame = conn.read_frame().await;
            assert_eq!(
                (frame.opcode, frame.close_code()),
                (OP_CLOSE, Some(1002)),
                "{name} (hello first: {hello_first}): {frame:?}"
            );
            assert!(
                std::str::from_utf8(&frame.payload[2..]).is_ok(),
                "{name}: {frame:?}"
            );
            conn.expect_eof().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 7. UTF-8
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let addr = start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an invalid byte",
            text(b"{\"type\":\"ping\",\"x\":\"\xff\"}"),
        ),
        ("a bad continuation byte", text(b"{\"x\":\"\xc3\x28\"}")),
        ("an overlong encoding", text(b"{\"x\":\"\xc0\xaf\"}")),
        ("a surrogate", text(b"{\"x\":\"\xed\xa0\x80\"}")),
        ("a truncated sequence at the end", text(b"{}\xe2\x82")),
        ("invalid UTF-8 across fragments", {
            // E2 82 starts a € that the next fragment does not finish.
            let mut bytes = frame(false, OP_TEXT, b"{\"x\":\"\xe2\x82");
            bytes.extend(frame(true, OP_CONTINUATION, b"(\"}"));
            bytes
        }),
        ("invalid UTF-8 in the last of three fragments", {
            let mut bytes = frame(false, OP_TEXT, b"{\"type\":");
            bytes.extend(frame(false, OP_CONTINUATION, b"\"ping\""));
            bytes.extend(frame(true, OP_CONTINUATION, b",\"x\":\"\xfe\"}"));
            bytes
        }),
        (
            "invalid UTF-8 in a close reason",
            close(1000, b"bye \xff\xfe"),
        ),
    ];
    for hello_first in [true, false] {
        for (name, bytes) in &cases {
            let mut conn = if hello_first {
                Conn::hello(addr, "alice").await
            } else {
                Conn::open(addr).await
            };
            conn.send(bytes).await;
            let frame = conn.read_frame().await;
            assert_eq!(
                (frame.opcode, frame.close_code()),
                (OP_CLOSE, Some(1007)),
                "{name} (hello first: {hello_first}): {frame:?}"
            );
            conn.expect_eof().await;
        }
    }
}

#[tokio::test]
async fn text_that_cannot_become_utf8_closes_at_its_fragment_not_at_the_message_end() {
    let addr = start().await;
    // The rest of the message never comes: only a check of each fragment can close this.
    for first in [&b"{\"x\":\"\xff"[..], b"{\"x\":\"\xe2\x28", b"\xc0\xaf"] {
        let mut conn = Conn::hello(addr, "alice").await;
        conn.send(&frame(false, OP_TEXT, first)).await;
        conn.expect_close(1007).await;
    }
    // The same in a continuation, the first fragment being fine.
    let mut conn = Conn::hello(addr, "alice").await;
    conn.send(&frame(false, OP_TEXT, b"{\"x\":")).await;
    conn.send(&frame(false, OP_CONTINUATION, b"\"\xfe")).await;
    conn.expect_close(1007).await;
    // A character cut between fragments is not an error: E2 82 | AC is one euro sign.
    let mut conn = Conn::open(addr).await;
    let hello = r#"{"type":"hello","id":1,"token":"dev:alice","x":"€"}"#.as_bytes();
    let cut = hello.len() - 3;
    conn.send(&frame(false, OP_TEXT, &hello[..cut])).await;
    conn.send(&frame(true, OP_CONTINUATION, &hello[cut..]))
        .await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    conn.still_works(2).await;
}

#[tokio::test]
async fn text_that_cannot_become_utf8_closes_while_its_frame_is_still_arriving() {
    let addr = start().await;
    // Only the start of each frame is sent; the rest never comes, so only a check of what
    // has arrived can close these. The frames declare 64 payload bytes.
    let padded = |start: &[u8]| {
        let mut payload = start.to_vec();
        payload.resize(64, b'a');
        payload
    };
    for start in [&b"{\"x\":\"\xff"[..], b"{\"x\":\"\xe2\x28", b"\xc0"] {
        for fin in [true, false] {
            let mut conn = Conn::hello(addr, "alice").await;
            let bytes = frame(fin, OP_TEXT, &padded(start));
            // Header (2 + 4 mask bytes) and the bad start.
            conn.send(&bytes[..6 + start.len()]).await;
            conn.expect_close(1007).await;
        }
    }
    // A continuation whose first byte cannot finish the character the last fragment began.
    let mut conn = Conn::hello(addr, "alice").await;
    conn.send(&frame(false, OP_TEXT, b"{\"x\":\"\xe2")).await;
    let bytes = frame(true, OP_CONTINUATION, &padded(b"\x28"));
    conn.send(&bytes[..7]).await;
    conn.expect_close(1007).await;

    // Characters cut between the pieces of a frame, and between a fragment and the pieces
    // of the next, are not errors: E2 | 82 | AC is one euro sign. (Whether the server reads
    // each piece apart is up to the network; the reader's unit tests cut at every byte.)
    let hello = r#"{"type":"hello","id":1,"token":"dev:alice","x":"€€"}"#.as_bytes();
    let euro = hello.len() - 8;
    let mut conn = Conn::open(addr).await;
    let bytes = frame(true, OP_TEXT, hello);
    let header = bytes.len() - hello.len();
    let mut at = 0;
    for cut in [header + euro + 1, header + euro + 2, bytes.len() - 3] {
        conn.send(&bytes[at..cut]).await;
        at = cut;
    }
    conn.send(&bytes[at..]).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    conn.still_works(2).await;
    let mut conn = Conn::open(addr).await;
    conn.send(&frame(false, OP_TEXT, &hello[..euro + 1])).await;
    let bytes = frame(true, OP_CONTINUATION, &hello[euro + 1..]);
    let header = bytes.len() - (hello.len() - euro - 1);
    conn.send(&bytes[..header + 1]).await;
    conn.send(&bytes[header + 1..]).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    conn.still_works(2).await;
}

// ---------------------------------------------------------------------------------------
// 8. Size limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_declared_100_mib_frame_closes_with_1009_before_any_payload() {
    let addr = start().await;
    for (opcode, hello_first) in [
        (OP_BINARY, true),
        (OP_TEXT, true),
        (OP_TEXT, false),
        (OP_CONTINUATION, true),
    ] {
        let mut conn = if hello_first {
            Conn::hello(addr, "alice").await
        } else {
            Conn::open(addr).await
        };
        if opcode == OP_CONTINUATION {
            // The start of a message, then a continuation declaring 100 MiB.
            conn.send(&frame(false, OP_TEXT, b"{")).await;
        }
        // Only the header: if the server waited for the payload, it would never answer
        // (after hello) or close with 4001 at the hello deadline (before it).
        conn.send(&header_only(true, opcode, 100 << 20)).await;
        conn.expect_close(1009).await;
    }
}

#[tokio::test]
async fn fragments_adding_up_past_the_limit_close_with_1009() {
    let addr = start().await;
    let half = vec![b'a'; MAX_MESSAGE / 2];
    for hello_first in [true, false] {
        let mut conn = if hello_first {
            Conn::hello(addr, "alice").await
        } else {
            Conn::open(addr).await
        };
        // Exactly the limit so far, which is allowed; one more byte is not.
        conn.send(&frame(false, OP_TEXT, &half)).await;
        conn.send(&frame(false, OP_CONTINUATION, &half)).await;
        conn.send_lossy(&frame(true, OP_CONTINUATION, b"a")).await;
        conn.expect_close(1009).await;
    }
    // Many small fragments (a thousand of 100 bytes) add up past it as well.
    let mut conn = Conn::hello(addr, "bob").await;
    let mut bytes = frame(false, OP_TEXT, b"[");
    for _ in 0..1_000 {
        bytes.extend(frame(false, OP_CONTINUATION, &[b' '; 100]));
    }
    conn.send_lossy(&bytes).await;
    conn.expect_close(1009).await;
}

#[tokio::test]
async fn a_message_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
    let addr = start().await;
    let mut conn = Conn::hello(addr, "alice").await;
    let message = |len: usize| {
        let skeleton = json!({"type": "ping", "id": 2, "pad": ""}).to_string();
        let pad = "p".repeat(len - skeleton.len());
        let message = json!({"type": "ping", "id": 2, "pad": pad}).to_string();
        assert_eq!(message.len(), len);
        message
    };
    conn.send(&text(message(MAX_MESSAGE).as_bytes())).await;
    let reply = conn.read_json().await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("ok"), &json!(2)));
    // In fragments, the same.
    let whole = message(MAX_MESSAGE);
    let (a, b) = whole.as_bytes().split_at(40_000);
    conn.send(&frame(false, OP_TEXT, a)).await;
    conn.send(&frame(true, OP_CONTINUATION, b)).await;
    let reply = conn.read_json().await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("ok"), &json!(2)));

    conn.send_lossy(&text(message(MAX_MESSAGE + 1).as_bytes()))
        .await;
    conn.expect_close(1009).await;
}

// ---------------------------------------------------------------------------------------
// 9. Binary messages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_binary_message_gets_bad_request_and_the_connection_goes_on() {
    let addr = start().await;
    let mut conn = Conn::hello(addr, "alice").await;
    let messages = [
        frame(true, OP_BINARY, &[0, 1, 2, 0xff]),
        frame(true, OP_BINARY, b""),
        // Binary that happens to be a valid JSON request is still binary.
        frame(true, OP_BINARY, br#"{"type":"ping","id":3}"#),
        {
            let mut fragmented = frame(false, OP_BINARY, &[0xff; 10]);
            fragmented.extend(frame(true, OP_CONTINUATION, &[0xfe; 10]));
            fragmented
        },
    ];
    for (at, message) in messages.iter().enumerate() {
        conn.send(message).await;
        let error = conn.read_json().await;
        assert_eq!(error["type"], "error", "binary message {at}: {error}");
        assert_eq!(error["code"], "bad_request", "binary message {at}: {error}");
        assert!(error.get("id").is_none(), "binary message {at}: {error}");
        assert!(error["message"].is_string(), "{error}");
        conn.still_works(10 + at as u64).await;
    }
}

// ---------------------------------------------------------------------------------------
// 10. HTTP refusals
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn requests_that_are_not_upgrades_are_refused_and_closed() {
    let addr = start().await;
    let upgrade = |first_line: &str, version: &str, key: Option<&str>| {
        let key = key.map_or_else(String::new, |key| format!("Sec-WebSocket-Key: {key}\r\n"));
        format!(
            "{first_line}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {key}Sec-WebSocket-Version: {version}\r\n\r\n"
        )
    };

    let head = refused(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426).await;
    assert_eq!(head.header("upgrade"), Some("websocket"), "{head:?}");
    // Upgrade without `Connection: Upgrade` is no upgrade either.
    let only_upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {RFC_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    refused(addr, only_upgrade.as_bytes(), 426).await;

    let v8 = upgrade("GET /ws HTTP/1.1", "8", Some(RFC_KEY));
    let head = refused(addr, v8.as_bytes(), 426).await;
    assert_eq!(head.header("sec-websocket-version"), Some("13"), "{head:?}");

    let no_key = upgrade("GET /ws HTTP/1.1", "13", None);
    refused(addr, no_key.as_bytes(), 400).await;
    // "the sample" (10 bytes) in base64, and 24 characters that are not base64.
    for key in ["dGhlIHNhbXBsZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"] {
        let bad_key = upgrade("GET /ws HTTP/1.1", "13", Some(key));
        refused(addr, bad_key.as_bytes(), 400).await;
    }

    let post = upgrade("POST /ws HTTP/1.1", "13", Some(RFC_KEY));
    let head = refused(addr, post.as_bytes(), 405).await;
    assert_eq!(head.header("allow"), Some("GET"), "{head:?}");

    let elsewhere = upgrade("GET /nope HTTP/1.1", "13", Some(RFC_KEY));
    refused(addr, elsewhere.as_bytes(), 404).await;
    refused(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404).await;

    let http10 = upgrade("GET /ws HTTP/1.0", "13", Some(RFC_KEY));
    refused(addr, http10.as_bytes(), 505).await;

    // Garbage: binary noise, and the start of a TLS ClientHello.
    refused(addr, b"\x00\x01\x02 garbage\r\n\r\n", 400).await;
    refused(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400).await;
    refused(addr, b"GET /ws HTTP/1.1\r\nbad header line\r\n\r\n", 400).await;

    // The server still upgrades a correct request afterwards.
    Conn::hello(addr, "alice").await;
}

#[tokio::test]
async fn heads_over_the_limits_get_431() {
    let addr = start().await;
    // The request line, Host, the four upgrade headers and `extra` more.
    let with_headers = |extra: usize| {
        let mut request = upgrade_request(RFC_KEY);
        request.truncate(request.len() - 2);
        for i in 0..extra {
            request.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        request.push_str("\r\n");
        request
    };
    // 64 header fields are accepted, 65 are not.
    let mut conn = Conn::connect(addr).await;
    conn.send(with_headers(59).as_bytes()).await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 101, "64 header fields are allowed: {head:?}");
    refused(addr, with_headers(60).as_bytes(), 431).await;

    // A head of about 8,000 bytes is accepted.
    let mut request = upgrade_request(RFC_KEY);
    request.truncate(request.len() - 2);
    request.push_str(&format!("X-Big: {}\r\n\r\n", "b".repeat(7_800)));
    assert!(request.len() > 7_900 && request.len() < 8 * 1024);
    let mut conn = Conn::connect(addr).await;
    conn.send(request.as_bytes()).await;
    assert_eq!(conn.read_head().await.status, 101);

    // One header of 9 KiB, trickled in 1 KiB writes: 431 once 8 KiB arrived. The server may
    // answer and close before the last writes, which may then fail.
    let mut request = upgrade_request(RFC_KEY);
    request.truncate(request.len() - 2);
    request.push_str(&format!("X-Big: {}\r\n\r\n", "b".repeat(9 * 1024)));
    let mut conn = Conn::connect(addr).await;
    for chunk in request.as_bytes().chunks(1024) {
        if conn.tcp.write_all(chunk).await.is_err() || conn.tcp.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let head = conn.read_head().await;
    let body = conn.read_to_end().await;
    assert_eq!(body.len(), head.content_length());
    assert_refusal(&head, &body, 431, request.as_bytes());

    // The same head in one write.
    refused(addr, request.as_bytes(), 431).await;
}

// ---------------------------------------------------------------------------------------
// 11. Static pages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pages_are_served_beside_the_websocket_route() {
    const BODY: &str = "<h1>hi</h1>";
    let server = bind(WsConfig::default())
        .await
        .with_page("/", "text/html; charset=utf-8", BODY);
    let addr = serve(server);

    for request in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (head, body) = http(addr, request.as_bytes()).await;
        assert_eq!(head.status, 200, "{request:?}: {head:?}");
        assert_eq!(
            head.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{head:?}"
        );
        assert_eq!(head.header("content-length"), Some("11"), "{head:?}");
        assert_eq!(
            head.header("x-content-type-options"),
            Some("nosniff"),
            "{head:?}"
        );
        assert_eq!(head.header("cache-control"), Some("no-cache"), "{head:?}");
        assert_eq!(body, BODY.as_bytes());
    }

    // HEAD: the same headers, no body.
    let mut conn = Conn::connect(addr).await;
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-length"), Some("11"), "{head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    conn.expect_eof().await;

    // Other methods on a page: 405; other paths: still 404.
    let head = refused(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        405,
    )
    .await;
    assert_eq!(head.header("allow"), Some("GET, HEAD"), "{head:?}");
    refused(addr, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", 404).await;

    // The WebSocket route still works on the same server.
    let mut conn = Conn::hello(addr, "alice").await;
    conn.still_works(2).await;
}

// ---------------------------------------------------------------------------------------
// 12. The handshake deadline
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_handshake_that_never_completes_is_dropped_at_the_deadline() {
    let mut config = WsConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    let addr = serve(bind(config).await);

    // Nothing at all, and half a head.
    let mut silent = Conn::connect(addr).await;
    let mut half = Conn::connect(addr).await;
    half.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpg").await;
    silent.expect_eof().await;
    half.expect_eof().await;

    // The deadline is the handshake's only: an upgraded connection outlives it.
    let mut conn = Conn::open(addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
}

// ---------------------------------------------------------------------------------------
// 13. A ping flood from a client that never reads
// ---------------------------------------------------------------------------------------

/// An upgraded connection whose receive window is small, so that the server's writes to
/// it block as soon as the client stops reading.
async fn small_window(addr: SocketAddr) -> Conn {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut conn = Conn {
        tcp,
        buf: Vec::new(),
    };
    conn.send(upgrade_request(RFC_KEY).as_bytes()).await;
    assert_eq!(conn.read_head().await.status, 101);
    conn
}

/// The payload of ping `i`: its number in 125 bytes (the most a control frame carries).
fn numbered(i: usize) -> Vec<u8> {
    format!("{i:0>125}").into_bytes()
}

/// `count` numbered pings, in one buffer.
fn ping_flood(count: usize) -> Vec<u8> {
    let mut flood = Vec::with_capacity(count * 131);
    for i in 0..count {
        flood.extend(frame(true, OP_PING, &numbered(i)));
    }
    flood
}

/// Reads up to the text message with `id`, which it returns, with the payloads of the
/// pongs read before it. Pongs must come in the order of their pings.
async fn pongs_then_reply(conn: &mut Conn, id: u64) -> (Vec<Vec<u8>>, Value) {
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    loop {
        let frame = conn.read_frame().await;
        match frame.opcode {
            OP_PONG => {
                if let (Some(before), Ok(now)) = (
                    pongs
                        .last()
                        .and_then(|p| std::str::from_utf8(p).ok()?.parse::<usize>().ok()),
                    std::str::from_utf8(&frame.payload)
                        .unwrap_or("")
                        .parse::<usize>(),
                ) {
                    assert!(now > before, "pong {now} after pong {before}");
                }
                pongs.push(frame.payload);
            }
            OP_TEXT => {
                let message: Value = serde_json::from_slice(&frame.payload).unwrap();
                if message["id"] == id {
                    return (pongs, message);
                }
            }
            other => panic!("unexpected opcode {other}: {frame:?}"),
        }
    }
}

/// Frames that arrive while the server is between reads. A read that does not fill the
/// buffer clears the socket's read readiness without another `recv`: a frame landing just
/// after such a read must still wake the reader. A lost wake-up stalls the connection, and
/// the hello's reply never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_written_one_at_a_time_while_the_server_reads_are_all_read() {
    const PINGS: usize = 3_000;
    let addr = start().await;
    let mut conn = Conn::open(addr).await;
    for i in 0..PINGS {
        let ping = frame(true, OP_PING, &numbered(i));
        assert_eq!(ping.len(), 131);
        if i % 3 == 0 {
            // Split inside the frame: the server reads a part, then waits for the rest.
            let (head, tail) = ping.split_at(1 + i % 100);
            conn.send(head).await;
            tokio::task::yield_now().await;
            conn.send(tail).await;
        } else {
            conn.send(&ping).await;
        }
        if i % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Last, more than one read's worth in one write: what the first read leaves must be
    // read too, with nothing more arriving to wake the reader.
    let mut last = ping_flood(PINGS + 40)[PINGS * 131..].to_vec();
    last.extend(text(hello_json("alice", 1).as_bytes()));
    conn.send(&last).await;
    let (pongs, reply) = pongs_then_reply(&mut conn, 1).await;
    assert_hello_reply(&reply, "alice", 1);
    assert_eq!(
        pongs.last(),
        Some(&numbered(PINGS + 39)),
        "the last ping is answered"
    );
    conn.still_works(2).await;
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_leaves_the_connection_usable() {
    const PINGS: usize = 10_000;
    let addr = start().await;
    let mut conn = small_window(addr).await;
    conn.send(&ping_flood(PINGS)).await;
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    let (pongs, reply) = pongs_then_reply(&mut conn, 1).await;
    assert_hello_reply(&reply, "alice", 1);
    assert!(!pongs.is_empty() && pongs.len() <= PINGS);
    for pong in &pongs {
        let n: usize = std::str::from_utf8(pong).unwrap().parse().unwrap();
        assert!(n < PINGS);
        assert_eq!(pong, &numbered(n), "a pong echoes its ping");
    }
    conn.still_works(2).await;
}

#[tokio::test]
async fn a_ping_flood_beyond_the_socket_buffers_is_answered_only_in_part() {
    // 50,000 pongs of 127 bytes are over 6 MB: more than the kernel's buffers hold (a send
    // buffer of 4 MiB at most on Linux, and a small receive window here), so the server's
    // writes block. A server that queued every pong in memory would deliver all of them
    // once the client reads; one that keeps at most one unwritten pong drops the others.
    const PINGS: usize = 50_000;
    let addr = start().await;
    let mut conn = small_window(addr).await;
    conn.send(&ping_flood(PINGS)).await;
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    let (pongs, reply) = pongs_then_reply(&mut conn, 1).await;
    assert_hello_reply(&reply, "alice", 1);
    assert!(
        !pongs.is_empty() && pongs.len() < PINGS,
        "{} pongs for {PINGS} pings to a client that did not read",
        pongs.len()
    );
    conn.still_works(2).await;
}

#[tokio::test]
async fn the_most_recent_ping_of_a_flood_is_answered() {
    // After hello: 50,000 numbered pings (enough to block the server's writes), a ping
    // "latest", then a `ping` request, all without reading. The request's reply makes the
    // engine flush whatever waits, so no timer is involved: the pong of "latest" must come
    // before that reply.
    let addr = start().await;
    let mut conn = small_window(addr).await;
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    let mut bytes = ping_flood(50_000);
    bytes.extend(frame(true, OP_PING, b"latest"));
    bytes.extend(text(br#"{"type":"ping","id":2}"#));
    conn.send(&bytes).await;
    let (pongs, reply) = pongs_then_reply(&mut conn, 2).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let last = pongs
        .last()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    assert!(
        pongs.iter().any(|p| p == b"latest"),
        "{} pongs, the last for {last:?}; none for the most recent ping",
        pongs.len()
    );
}

#[tokio::test]
async fn a_pong_held_back_by_a_full_socket_goes_out_once_the_client_reads() {
    // After hello: 50,000 numbered pings, then a ping "latest", and nothing else. The client
    // then reads: the pong of "latest" must come without any further traffic, not with the
    // engine's next frame (its heartbeat, 25 s later).
    let addr = start().await;
    let mut conn = small_window(addr).await;
    conn.send(&text(hello_json("alice", 1).as_bytes())).await;
    assert_hello_reply(&conn.read_json().await, "alice", 1);
    let mut bytes = ping_flood(50_000);
    bytes.extend(frame(true, OP_PING, b"latest"));
    conn.send(&bytes).await;
    loop {
        let frame = conn.read_frame().await;
        assert_eq!(frame.opcode, OP_PONG, "{frame:?}");
        if frame.payload == b"latest" {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The hostile inputs of issue 9 at their full sizes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_thousand_one_byte_fragments_without_fin_close_with_1009() {
    // Each fragment costs the server its byte only, and the message limit bounds them all.
    let addr = start().await;
    let mut conn = Conn::hello(addr, "alice").await;
    let mut bytes = frame(false, OP_TEXT, b"[");
    for _ in 0..100_000 {
        bytes.extend(frame(false, OP_CONTINUATION, b" "));
    }
    conn.send_lossy(&bytes).await;
    conn.expect_close(1009).await;
}

#[tokio::test]
async fn a_one_mib_head_trickled_is_refused_with_431_long_before_its_end() {
    let addr = start().await;
    let mut request = upgrade_request(RFC_KEY);
    request.truncate(request.len() - 2);
    request.push_str(&format!("X-Big: {}\r\n\r\n", "b".repeat(1 << 20)));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.split();
    let mut sent = 0;
    // Trickle the head while reading the answer; the server answers at its 8 KiB limit and
    // closes, after which the writes fail.
    let writing = async {
        for chunk in request.as_bytes().chunks(1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let mut answer = Vec::new();
    let reading = async {
        let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut answer)).await;
    };
    tokio::join!(writing, reading);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        sent < 64 * 1024,
        "the server stopped at its 8 KiB limit, so the writes failed long before 1 MiB: \
         {sent} bytes went out"
    );
}

#[tokio::test]
async fn two_thousand_header_fields_are_refused_with_431() {
    let addr = start().await;
    let mut request = upgrade_request(RFC_KEY);
    request.truncate(request.len() - 2);
    for i in 0..2_000 {
        request.push_str(&format!("a{i}:\r\n"));
    }
    request.push_str("\r\n");
    refused(addr, request.as_bytes(), 431).await;
}
