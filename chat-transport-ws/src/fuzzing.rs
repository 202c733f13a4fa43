//! Harnesses for fuzzing and property tests. **Not part of the API**: hidden, and free to
//! change. `fuzz/` (cargo-fuzz) and `tests/fuzz_properties.rs` (`cargo test`) run the same
//! functions, each a function of arbitrary bytes that panics when an invariant breaks:
//!
//! | harness | what it drives | input |
//! |---|---|---|
//! | [`protocol_decode`] | `Request::decode` and `ServerFrame::decode` | one frame's bytes |
//! | [`ws_frames`] | the frame header parser and unmasking, and a reference reader | a client's byte stream |
//! | [`HandshakeHarness`] | the HTTP request head: parse, limits, the upgrade's answer | 3 setting bytes, then the request |
//! | [`ConnectionHarness`] | a whole connection to a [`WsServer`](crate::WsServer): the socket reader (frames, reassembly, pings, closes) and writer, and the engine behind them | 1 byte (write size), then the client's frames |
//! | [`EngineHarness`] | `Engine::serve` over in-memory channels | `\n`-separated frames |
//!
//! The reference reader ([`ws_frames`]) is an independent statement of what RFC 6455 and
//! this transport's limits make of a client's bytes; [`ConnectionHarness`] holds the real
//! reader to it, through the engine's replies and the close code.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chat_core::engine::{EngineConfig, Inbound, Outbound, Peer};
use chat_core::protocol::{DecodeLimits, ErrorCode, Rejection, ReplyBody, Request, ServerFrame};
use chat_core::{Engine, RequestId};
use futures_util::Sink;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::handshake::{self, Page, Pages};
use crate::server::WsConfig;
use crate::wire::{self, Violation};

/// The largest message the harnesses' engines take (their `max_frame_bytes`): small, so
/// that fuzzed inputs reach the limit.
pub const MAX_MESSAGE: usize = 1024;

/// The `id` of the `ping` a harness sends last, to know that everything before it was
/// answered.
const SENTINEL: u64 = RequestId::MAX.get();

/// How long one input may take, in the harnesses' clock, before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Engines are replaced after this many inputs, which bounds their memory and the size of
/// their rooms (every input's user may join the same few).
const RECYCLE: u64 = 250;

/// The engine settings of the harnesses: small limits, so that fuzzed inputs reach them.
pub fn engine_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.decode = DecodeLimits {
        max_body: 64,
        max_meta: 64,
    };
    config.max_frame_bytes = MAX_MESSAGE;
    config.history_max_bytes = 16 * 1024;
    config.max_rooms_per_user = 8;
    config.rate_burst = 40;
    config.rate_per_sec = 20;
    config.rate_violations = 10;
    config.outbox_frames = 64;
    config.outbox_bytes = 64 * 1024;
    config
}

// ---------------------------------------------------------------------------------------
// protocol_decode

/// Decodes `data` as a client request (with the default limits and with small ones) and
/// as a server frame: never a panic; every request decoded re-encodes to one that decodes
/// to the same; every rejection is `bad_request` or `too_large` and its error frame is
/// valid protocol; every server frame decoded re-encodes to itself.
pub fn protocol_decode(data: &[u8]) {
    let small = DecodeLimits {
        max_body: 8,
        max_meta: 16,
    };
    let default = DecodeLimits::default();
    let with_default = decode_request(data, &default);
    let with_small = decode_request(data, &small);
    // The limits decide between a request and `too_large`, nothing else.
    match (&with_default, &with_small) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the limits changed a decoded request"),
        (Err(a), Err(b)) => assert_eq!(a.id, b.id, "the limits changed a rejection's id"),
        (Err(a), Ok(_)) => panic!("rejected with the default limits only: {a}"),
        (Ok(_), Err(b)) => assert_eq!(b.code, ErrorCode::TooLarge, "{b}"),
    }
    if let Ok(frame) = ServerFrame::decode(data) {
        let encoded = frame.encode();
        let again = ServerFrame::decode(encoded.as_bytes())
            .unwrap_or_else(|e| panic!("a re-encoded server frame does not decode: {e}"));
        assert_eq!(again, frame, "a server frame changed in a round trip");
        assert_eq!(again.encode(), encoded, "encoding is not a fixpoint");
    }
}

fn decode_request(data: &[u8], limits: &DecodeLimits) -> Result<Request, Rejection> {
    let decoded = Request::decode(data, limits);
    match &decoded {
        Ok(request) => {
            let encoded = request.encode();
            let again = Request::decode(encoded.as_bytes(), limits)
                .unwrap_or_else(|e| panic!("{encoded:?} (re-encoded) does not decode: {e}"));
            assert_eq!(&again, request, "a request changed in a round trip");
            assert_eq!(again.encode(), encoded, "encoding is not a fixpoint");
        }
        Err(rejection) => {
            assert!(
                matches!(rejection.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
                "unexpected code {:?}",
                rejection.code
            );
            assert!(
                !rejection.message.is_empty(),
                "a rejection without a message"
            );
            if let Some(id) = rejection.id {
                // The id came from the input: its digits are there.
                let digits = id.get().to_string();
                assert!(
                    data.windows(digits.len()).any(|w| w == digits.as_bytes()),
                    "rejection id {digits} is not in the input"
                );
            }
            let frame = rejection.to_frame();
            let decoded = ServerFrame::decode(frame.encode().as_bytes())
                .unwrap_or_else(|e| panic!("an error frame does not decode: {e}"));
            assert_eq!(decoded, frame, "an error frame changed in a round trip");
        }
    }
    decoded
}

// ---------------------------------------------------------------------------------------
// ws_frames: the header parser, unmasking, and the reference reader

/// Parses `data` as a client's byte stream, frame after frame, the way the socket reader
/// does: every header the parser accepts re-encodes to its bytes and is found the same in
/// every longer buffer (and in none shorter); every answer for a buffer holds for its
/// extensions; unmasking at any offset and in any pieces is the XOR of the RFC; and the
/// reference reader (limit [`MAX_MESSAGE`]) runs over the whole stream.
pub fn ws_frames(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let parsed = wire::parse_header(rest);
        check_prefixes(rest, parsed);
        let Ok(Some(header)) = parsed else {
            break;
        };
        assert!(
            matches!(header.size, 6 | 8 | 14),
            "header size {}",
            header.size
        );
        let mut again = vec![u8::from(header.fin) << 7 | header.opcode];
        match header.size {
            6 => again.push(0x80 | header.len as u8),
            8 => {
                again.push(0x80 | 126);
                again.extend_from_slice(&(header.len as u16).to_be_bytes());
            }
            _ => {
                again.push(0x80 | 127);
                again.extend_from_slice(&header.len.to_be_bytes());
            }
        }
        again.extend_from_slice(&header.mask);
        assert_eq!(&rest[..header.size], &again[..], "the header re-encodes");
        assert!(header.len < 1 << 63);
        if header.is_control() {
            assert!(
                header.fin && header.len <= 125,
                "a bad control frame passed"
            );
        }
        let available = (rest.len() - header.size) as u64;
        let take = header.len.min(available) as usize;
        let payload = &rest[header.size..header.size + take];
        check_unmask(payload, header.mask, at);
        if header.len > available {
            break;
        }
        at += header.size + take;
    }
    // The reference reader must itself hold together.
    let reading = read_stream(data, MAX_MESSAGE as u64);
    assert!(reading.consumed <= data.len());
    if reading.end == End::Idle {
        assert_eq!(reading.consumed, data.len());
    }
}

/// `parse_header` on every prefix of a header: "need more" until the full answer, which
/// then never changes.
fn check_prefixes(rest: &[u8], full: Result<Option<wire::Header>, Violation>) {
    let mut settled = None;
    for cut in 0..=rest.len().min(wire::MAX_HEADER + 4) {
        let answer = wire::parse_header(&rest[..cut]);
        match (settled, answer) {
            (None, Ok(None)) => {}
            (None, decided) => settled = Some(decided),
            (Some(before), now) => assert_eq!(before, now, "the answer changed at {cut} bytes"),
        }
    }
    if let Some(decided) = settled {
        assert_eq!(decided, full, "a prefix decided otherwise than the whole");
    } else {
        assert_eq!(full, Ok(None), "no prefix decided, the whole did");
    }
    if let Err(violation) = full {
        assert!(matches!(violation, Violation::Protocol(_)), "{violation:?}");
    }
}

/// `wire::unmask` against the XOR of RFC 6455 §5.3, whole and in two pieces, from an
/// offset taken from the input.
fn check_unmask(payload: &[u8], mask: [u8; 4], seed: usize) {
    let offset = seed % 7;
    let expected: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[(offset + i) % 4])
        .collect();
    let mut whole = payload.to_vec();
    wire::unmask(&mut whole, mask, offset);
    assert_eq!(whole, expected, "unmask differs from the RFC");
    let split = payload
        .first()
        .map_or(0, |&b| usize::from(b) % (payload.len() + 1));
    let mut pieces = payload.to_vec();
    let (a, b) = pieces.split_at_mut(split);
    wire::unmask(a, mask, offset);
    wire::unmask(b, mask, offset + split);
    assert_eq!(pieces, expected, "unmask in pieces differs");
    wire::unmask(&mut pieces, mask, offset);
    assert_eq!(pieces, payload, "unmasking twice is not the identity");
}

/// What the reader hands the engine, in the reference reading.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(Vec<u8>),
    Binary,
    /// A ping (its payload, which the pong must carry) or a pong (`None`).
    Heartbeat(Option<Vec<u8>>),
}

/// How the reference reading of a byte stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At a frame boundary, outside any fragmented message: more frames may follow.
    Idle,
    /// In the middle of a frame or a fragmented message.
    Incomplete,
    /// The client closed with this code (the server echoes it).
    Closed(u16),
    /// Broken framing (1002) or text that is not UTF-8 (1007).
    Violation(u16),
    /// A frame or message over the limit: the engine closes with 1009.
    TooLarge,
}

#[derive(Debug)]
struct Reading {
    items: Vec<Item>,
    end: End,
    /// Bytes of the stream read (up to the end of the last frame taken).
    consumed: usize,
}

/// Whether the start of a text message can no longer become UTF-8, whatever follows: text
/// fails as soon as that is so (RFC 6455 §8.1), not when the message ends.
fn never_utf8(data: &[u8]) -> bool {
    matches!(std::str::from_utf8(data), Err(e) if e.error_len().is_some())
}

/// The reference reader: RFC 6455 §5 for a server with no extensions, and this
/// transport's order of checks (the size limit is known from the header, before the
/// payload; a fragmented message counts whole).
fn read_stream(data: &[u8], max_message: u64) -> Reading {
    let mut items = Vec::new();
    let mut partial: Option<(bool, Vec<u8>)> = None;
    let mut at = 0;
    let end = loop {
        let rest = &data[at..];
        let header = match wire::parse_header(rest) {
            Err(_) => break End::Violation(1002),
            Ok(None) if rest.is_empty() && partial.is_none() => break End::Idle,
            Ok(None) => break End::Incomplete,
            Ok(Some(header)) => header,
        };
        let so_far = partial.as_ref().map_or(0, |(_, data)| data.len() as u64);
        if !header.is_control() && header.len.saturating_add(so_far) > max_message {
            break End::TooLarge;
        }
        let total = header.size + header.len as usize;
        if rest.len() < total {
            // What has arrived of a text frame is checked already.
            let arrived = rest[header.size..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ header.mask[i % 4]);
            let so_far = match (header.opcode, &partial) {
                (0x1, None) => Some(arrived.collect::<Vec<u8>>()),
                (0x0, Some((true, data))) => Some(data.iter().copied().chain(arrived).collect()),
                _ => None,
            };
            if so_far.is_some_and(|text| never_utf8(&text)) {
                break End::Violation(1007);
            }
            break End::Incomplete;
        }
        let payload: Vec<u8> = rest[header.size..total]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ header.mask[i % 4])
            .collect();
        at += total;
        let message = |text: bool, payload: Vec<u8>| {
            if !text {
                Ok(Item::Binary)
            } else if std::str::from_utf8(&payload).is_ok() {
                Ok(Item::Text(payload))
            } else {
                Err(End::Violation(1007))
            }
        };
        let item = match header.opcode {
            0x1 | 0x2 if partial.is_some() => break End::Violation(1002),
            0x1 | 0x2 if header.fin => message(header.opcode == 0x1, payload),
            0x1 | 0x2 => {
                if header.opcode == 0x1 && never_utf8(&payload) {
                    break End::Violation(1007);
                }
                partial = Some((header.opcode == 0x1, payload));
                continue;
            }
            0x0 => {
                let Some((text, mut data)) = partial.take() else {
                    break End::Violation(1002);
                };
                data.extend_from_slice(&payload);
                if !header.fin {
                    if text && never_utf8(&data) {
                        break End::Violation(1007);
                    }
                    partial = Some((text, data));
                    continue;
                }
                message(text, data)
            }
            0x9 => Ok(Item::Heartbeat(Some(payload))),
            0xA => Ok(Item::Heartbeat(None)),
            0x8 => {
                break match *payload {
                    [] => End::Closed(1000),
                    [_] => End::Violation(1002),
                    [hi, lo, ref reason @ ..] => {
                        let code = u16::from_be_bytes([hi, lo]);
                        // §7.4.1 and the IANA registry: what a peer may send.
                        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                            End::Violation(1002)
                        } else if std::str::from_utf8(reason).is_err() {
                            End::Violation(1007)
                        } else {
                            End::Closed(code)
                        }
                    }
                };
            }
            other => panic!("parse_header let opcode {other:#x} through"),
        };
        match item {
            Ok(item) => items.push(item),
            Err(end) => break end,
        }
    };
    Reading {
        items,
        end,
        consumed: at,
    }
}

// ---------------------------------------------------------------------------------------
// What the engine must answer

/// The reply one inbound item must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one `ok` or `error` with this `id`.
    Id(u64),
    /// Exactly one `error` without an `id`.
    NoId,
    /// An `error` without an `id`, or nothing (a request without an `id` that succeeds).
    Maybe,
}

fn expect_text(text: &[u8], limits: &DecodeLimits) -> Expect {
    let id = match Request::decode(text, limits) {
        Ok(request) => match request.id {
            Some(id) => return Expect::Id(id.get()),
            None => return Expect::Maybe,
        },
        Err(rejection) => rejection.id,
    };
    id.map_or(Expect::NoId, |id| Expect::Id(id.get()))
}

/// Checks the ids of the replies (`ok` and `error`, in order) against what the requests
/// call for: each request its reply, in order. `complete`: every request was answered
/// (else the replies may stop early, as when the connection was closed).
fn check_replies(replies: &[Option<u64>], expected: &[Expect], complete: bool) {
    let mut e = 0;
    let mut r = 0;
    loop {
        // The requests up to the next one that must be answered with an id.
        let anchor = expected[e..]
            .iter()
            .position(|x| matches!(x, Expect::Id(_)))
            .map_or(expected.len(), |p| e + p);
        let must = expected[e..anchor]
            .iter()
            .filter(|x| **x == Expect::NoId)
            .count();
        let may = anchor - e - must;
        let mut without_id = 0;
        while r < replies.len() && replies[r].is_none() {
            without_id += 1;
            r += 1;
        }
        assert!(
            without_id <= must + may,
            "{without_id} replies without an id where at most {} can be (replies {replies:?}, expected {expected:?})",
            must + may
        );
        let Some(&Some(id)) = replies.get(r) else {
            if complete {
                assert!(
                    without_id >= must && anchor == expected.len(),
                    "requests left unanswered (replies {replies:?}, expected {expected:?})"
                );
            }
            return;
        };
        assert!(
            anchor < expected.len() && expected[anchor] == Expect::Id(id),
            "a reply with id {id} out of turn (replies {replies:?}, expected {expected:?})"
        );
        assert!(
            without_id >= must,
            "a refused frame got no reply (replies {replies:?}, expected {expected:?})"
        );
        r += 1;
        e = anchor + 1;
    }
}

/// What one server frame is to the checks.
#[derive(Debug, Default)]
struct Seen {
    /// The `id` of every `ok` and `error`, in order.
    replies: Vec<Option<u64>>,
    /// Text frames so far.
    texts: usize,
    sentinel_answered: bool,
}

impl Seen {
    /// Checks one text frame of the server: protocol v1, a round trip, and the hello
    /// reply first.
    fn text(&mut self, bytes: &[u8]) {
        let frame = ServerFrame::decode(bytes).unwrap_or_else(|e| {
            panic!(
                "the server sent an invalid frame ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
        assert_eq!(
            ServerFrame::decode(frame.encode().as_bytes()).ok().as_ref(),
            Some(&frame),
            "a server frame does not round-trip"
        );
        if self.texts == 0 {
            assert!(
                matches!(
                    &frame,
                    ServerFrame::Ok(reply) if matches!(reply.body, ReplyBody::Hello(_))
                ),
                "the first frame is not the hello reply: {frame:?}"
            );
        }
        self.texts += 1;
        let id = match &frame {
            ServerFrame::Ok(reply) => reply.id,
            ServerFrame::Error(error) => {
                assert!(
                    !matches!(error.code, ErrorCode::Internal | ErrorCode::Unavailable),
                    "the engine failed: {error:?}"
                );
                error.id
            }
            _ => return,
        };
        let id = id.map(RequestId::get);
        self.sentinel_answered |= id == Some(SENTINEL);
        self.replies.push(id);
    }
}

fn hello(user: u64) -> Vec<u8> {
    format!(r#"{{"type":"hello","id":1,"token":"dev:fz{user}"}}"#).into_bytes()
}

fn sentinel() -> Vec<u8> {
    format!(r#"{{"type":"ping","id":{SENTINEL}}}"#).into_bytes()
}

// ---------------------------------------------------------------------------------------
// engine_requests: Engine::serve over channels

/// Drives [`Engine::serve`] over in-memory channels: a fresh user's `hello`, then the
/// input's frames, then a `ping` whose reply shows that everything was answered. The input
/// is split on `\n`; a piece starting with byte 1 is a binary frame, 2 a heartbeat, 3 a
/// frame over the limit, anything else a text frame.
///
/// Checks: no panic (a request handler's panic, which the engine turns into `internal`,
/// included); every frame out is valid protocol v1 and round-trips; the hello reply comes
/// first; every request gets its reply, in order, with its `id`; a close comes only for a
/// frame over the limit, rate-limit strikes or a full queue, and nothing follows it.
#[derive(Debug)]
pub struct EngineHarness {
    runtime: Runtime,
    build: fn(EngineConfig) -> Engine,
    engine: Option<Engine>,
    inputs: u64,
}

impl EngineHarness {
    /// A harness on `runtime` (a current-thread runtime, best with paused time so that the
    /// engine's timers cost nothing), whose engines `build` makes from a configuration.
    pub fn new(runtime: Runtime, build: fn(EngineConfig) -> Engine) -> EngineHarness {
        EngineHarness {
            runtime,
            build,
            engine: None,
            inputs: 0,
        }
    }

    /// Runs one input.
    pub fn run(&mut self, data: &[u8]) {
        self.inputs += 1;
        if self.inputs % RECYCLE == 0 {
            if let Some(engine) = self.engine.take() {
                engine.shutdown();
            }
        }
        let engine = match &self.engine {
            Some(engine) => engine.clone(),
            None => {
                let _entered = self.runtime.enter();
                let engine = (self.build)(engine_config());
                self.engine = Some(engine.clone());
                engine
            }
        };
        let user = self.inputs;
        let session = Box::pin(engine_session(engine, user, data));
        self.runtime
            .block_on(async { tokio::time::timeout(HANG, session).await })
            .unwrap_or_else(|_| panic!("the session did not end within {HANG:?}"));
    }
}

async fn engine_session(engine: Engine, user: u64, data: &[u8]) {
    let limits = engine.config().decode;
    let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut expected = vec![Expect::Id(1)];
    let mut too_large = false;
    let _ = in_tx.send(Inbound::Text(Bytes::from(hello(user))));
    for piece in data.split(|&b| b == b'\n') {
        let item = match piece.first() {
            Some(1) => Inbound::Binary,
            Some(2) => Inbound::Heartbeat,
            Some(3) => Inbound::TooLarge,
            _ => Inbound::Text(Bytes::copy_from_slice(piece)),
        };
        if !too_large {
            match &item {
                Inbound::Binary => expected.push(Expect::NoId),
                Inbound::Text(text) => expected.push(expect_text(text, &limits)),
                Inbound::TooLarge => too_large = true,
                _ => {}
            }
        }
        let _ = in_tx.send(item);
    }
    if !too_large {
        expected.push(Expect::Id(SENTINEL));
    }
    let _ = in_tx.send(Inbound::Text(Bytes::from(sentinel())));
    let early_sentinel = expected[..expected.len() - 1].contains(&Expect::Id(SENTINEL));

    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
    let admission = engine.admit().expect("the engine admits a connection");
    let inbound = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx));
    let serve = engine.serve(admission, Peer::default(), inbound, Collect(out_tx));
    let mut in_tx = Some(in_tx);
    let collect = async {
        let mut seen = Seen::default();
        let mut close = None;
        while let Some(out) = out_rx.recv().await {
            assert!(close.is_none(), "{out:?} after the close");
            match out {
                Outbound::Frame(frame) => seen.text(frame.as_bytes()),
                Outbound::Close(code) => close = Some(code.code()),
                _ => {}
            }
            if seen.sentinel_answered || close.is_some() {
                // All answered (or closing): the client goes.
                in_tx = None;
            }
        }
        drop(in_tx);
        (seen, close)
    };
    let ((), (seen, close)) = futures_util::future::join(serve, collect).await;
    assert!(seen.texts > 0, "no hello reply");
    match close {
        None => assert!(seen.sentinel_answered, "neither all answered nor closed"),
        Some(1009) => assert!(too_large, "closed with 1009 without a frame over the limit"),
        Some(4029 | 4008) => {}
        Some(code) => panic!("closed with {code}"),
    }
    if too_large {
        assert!(close.is_some(), "a frame over the limit did not close");
    }
    let complete = close.is_none() && !early_sentinel;
    check_replies(&seen.replies, &expected, complete);
}

/// The outbound half of an in-memory connection.
#[derive(Debug)]
struct Collect(tokio::sync::mpsc::UnboundedSender<Outbound>);

impl Sink<Outbound> for Collect {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Outbound) -> Result<(), Infallible> {
        let _ = self.0.send(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------
// ws_connection: a whole connection to a WsServer

/// A [`WsServer`](crate::WsServer) on 127.0.0.1, and one connection to it per input: the
/// upgrade, a fresh user's `hello`, the input's bytes as the client's frames (written in
/// pieces of the first byte's size, 0 for all at once), then — when the reference reader
/// says the stream is at a frame boundary — a `ping` whose reply shows that everything was
/// answered.
///
/// Checks, against the reference reader ([`ws_frames`]): every server frame is final,
/// unmasked, of the shortest length form, valid protocol v1; the engine answers exactly
/// the messages the reference reads (each request its reply, in order, with its `id`);
/// pongs carry pings' payloads, in order; the close code is the one the stream calls for
/// (an echo of the client's, 1002, 1007 or 1009), or the engine's own 4029 or 4008; nothing
/// follows a close.
#[derive(Debug)]
pub struct ConnectionHarness {
    runtime: Runtime,
    build: fn(EngineConfig) -> Engine,
    server: Option<(Engine, JoinHandle<std::io::Result<()>>, SocketAddr)>,
    inputs: u64,
}

impl ConnectionHarness {
    /// A harness whose servers' engines `build` makes from a configuration.
    pub fn new(build: fn(EngineConfig) -> Engine) -> ConnectionHarness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        ConnectionHarness {
            runtime,
            build,
            server: None,
            inputs: 0,
        }
    }

    /// Runs one input.
    pub fn run(&mut self, data: &[u8]) {
        self.inputs += 1;
        if self.inputs % RECYCLE == 0 {
            if let Some((engine, task, _)) = self.server.take() {
                task.abort();
                engine.shutdown();
            }
        }
        let addr = match &self.server {
            Some((_, _, addr)) => *addr,
            None => {
                let build = self.build;
                let started = self.runtime.block_on(async move {
                    let engine = build(engine_config());
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    let addr = listener.local_addr().expect("an address");
                    let server = crate::WsServer::from_listener(listener, engine.clone());
                    let task = tokio::spawn(server.run_until(std::future::pending()));
                    (engine, task, addr)
                });
                let addr = started.2;
                self.server = Some(started);
                addr
            }
        };
        let user = self.inputs;
        let connection = Box::pin(connection(addr, user, data));
        self.runtime
            .block_on(async { tokio::time::timeout(HANG, connection).await })
            .unwrap_or_else(|_| panic!("the connection did not end within {HANG:?}"));
    }
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = Vec::new();
    wire::put_header(&mut out, opcode, payload.len());
    out[1] |= 0x80;
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    wire::unmask(&mut out[start..], mask, 0);
    out
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

async fn connection(addr: SocketAddr, user: u64, data: &[u8]) {
    let (piece, stream) = match data.split_first() {
        Some((&piece, stream)) => (usize::from(piece), stream),
        None => (0, data),
    };
    let limits = engine_config().decode;
    let reading = read_stream(stream, MAX_MESSAGE as u64);
    let mut expected = vec![Expect::Id(1)];
    let mut pings = Vec::new();
    for item in &reading.items {
        match item {
            Item::Text(text) => expected.push(expect_text(text, &limits)),
            Item::Binary => expected.push(Expect::NoId),
            Item::Heartbeat(Some(payload)) => pings.push(payload.clone()),
            Item::Heartbeat(None) => {}
        }
    }
    let idle = reading.end == End::Idle;
    if idle {
        expected.push(Expect::Id(SENTINEL));
    }
    let early_sentinel = expected[..expected.len() - 1].contains(&Expect::Id(SENTINEL));

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let (mut rx, mut tx) = tcp.into_split();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let write = async move {
        let mut out = UPGRADE.to_vec();
        out.extend_from_slice(&client_frame(wire::OP_TEXT, &hello(user)));
        // A write may fail once the server has closed: what follows is not read anyway.
        if tx.write_all(&out).await.is_err() {
            return;
        }
        for chunk in stream.chunks(if piece == 0 {
            stream.len().max(1)
        } else {
            piece
        }) {
            if tx.write_all(chunk).await.is_err() {
                return;
            }
            if piece != 0 {
                // Lets the server read what has arrived: frames arrive in pieces.
                tokio::task::yield_now().await;
            }
        }
        if idle {
            let _ = tx
                .write_all(&client_frame(wire::OP_TEXT, &sentinel()))
                .await;
            // Until everything is answered or the server closes.
            let _ = done_rx.await;
        }
        let _ = tx.shutdown().await;
    };
    let read = async move {
        let mut done_tx = Some(done_tx);
        let mut bytes = Vec::new();
        let mut buf = vec![0; 16 * 1024];
        let mut head = None;
        let mut at = 0;
        let mut seen = Seen::default();
        let mut pongs = Vec::new();
        let mut close = None;
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            bytes.extend_from_slice(&buf[..n]);
            if head.is_none() {
                let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                assert!(
                    bytes.starts_with(b"HTTP/1.1 101 "),
                    "the upgrade was refused: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
                head = Some(end + 4);
                at = end + 4;
            }
            while let Some((opcode, payload, size)) = server_frame(&bytes[at..]) {
                at += size;
                assert!(close.is_none(), "a frame after the close");
                match opcode {
                    wire::OP_TEXT => seen.text(payload),
                    wire::OP_PONG => pongs.push(payload.to_vec()),
                    wire::OP_CLOSE => {
                        assert!(payload.len() >= 2, "a close without a code");
                        close = Some(u16::from_be_bytes([payload[0], payload[1]]));
                    }
                    _ => {}
                }
            }
            if seen.sentinel_answered || close.is_some() {
                done_tx.take().map(|done| done.send(()));
            }
        }
        assert!(head.is_some(), "no answer to the upgrade");
        assert_eq!(at, bytes.len(), "the server's last frame was cut short");
        (seen, pongs, close)
    };
    let ((), (seen, pongs, close)) = futures_util::future::join(write, read).await;

    // Pongs answer pings, the latest when they come faster than the socket takes them.
    let mut pending = pings.iter();
    for pong in &pongs {
        assert!(
            pending.any(|ping| ping == pong),
            "a pong that answers no ping (pongs {pongs:?}, pings {pings:?})"
        );
    }
    let called_for = match reading.end {
        End::Idle | End::Incomplete => None,
        End::Closed(code) | End::Violation(code) => Some(code),
        End::TooLarge => Some(1009),
    };
    match close {
        Some(4029 | 4008) => {}
        other => assert_eq!(
            other, called_for,
            "the close code (stream end {:?})",
            reading.end
        ),
    }
    if idle && close.is_none() {
        assert!(seen.sentinel_answered, "neither all answered nor closed");
    }
    let complete = idle && close.is_none() && !early_sentinel;
    check_replies(&seen.replies, &expected, complete);
}

/// One frame of the server from the start of `bytes`: its opcode, payload and size, or
/// `None` when it has not all arrived. Panics on anything this server must not send.
fn server_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let [b0, b1, ..] = *bytes else {
        return None;
    };
    assert_eq!(
        b0 & 0xF0,
        0x80,
        "a server frame is final, without reserved bits"
    );
    let opcode = b0 & 0x0F;
    assert!(
        matches!(
            opcode,
            wire::OP_TEXT | wire::OP_CLOSE | wire::OP_PING | wire::OP_PONG
        ),
        "the server sent opcode {opcode:#x}"
    );
    assert_eq!(b1 & 0x80, 0, "a server frame is not masked");
    let (len, at) = match b1 & 0x7F {
        126 => {
            let raw = bytes.get(2..4)?;
            let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
            assert!(len >= 126, "not the shortest length form");
            (len, 4)
        }
        127 => {
            let raw = bytes.get(2..10)?;
            let mut word = [0; 8];
            word.copy_from_slice(raw);
            let len = usize::try_from(u64::from_be_bytes(word)).expect("a length");
            assert!(len > 0xFFFF, "not the shortest length form");
            (len, 10)
        }
        short => (usize::from(short), 2),
    };
    if opcode >= wire::OP_CLOSE {
        assert!(len <= 125, "a control frame over 125 bytes");
    }
    let payload = bytes.get(at..at + len)?;
    Some((opcode, payload, at + len))
}

// ---------------------------------------------------------------------------------------
// ws_handshake: the request head

/// Answers one request head per input with the handshake of [`WsServer`](crate::WsServer),
/// over a loopback TCP connection. The first three bytes choose the settings: the header
/// count limit (byte 0, modulo 65), the size limit (16 + 32 × byte 1), and (byte 2) whether
/// the connection is admitted (bit 0), an `Origin` allowlist (bit 1) and the route's path
/// (bit 2: `/chat` instead of `/ws`). A page is served at `/`.
///
/// Checks: no panic or hang; the answer is the one the request calls for — computed here
/// from `httparse` and RFC 6455 §4.2.1 — with a well-formed response (its
/// `Content-Length` the body's), and for an upgrade the right `Sec-WebSocket-Accept` and
/// exactly the bytes after the head handed on (those that came with the head, then the
/// socket's).
#[derive(Debug)]
pub struct HandshakeHarness {
    runtime: Runtime,
    listener: TcpListener,
}

impl Default for HandshakeHarness {
    fn default() -> Self {
        HandshakeHarness::new()
    }
}

impl HandshakeHarness {
    /// A harness with its own runtime and listener.
    pub fn new() -> HandshakeHarness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        HandshakeHarness { runtime, listener }
    }

    /// Runs one input.
    pub fn run(&mut self, data: &[u8]) {
        let (settings, request) = data.split_at(data.len().min(3));
        let byte = |i: usize| settings.get(i).copied().unwrap_or(0);
        let config = WsConfig {
            max_headers: usize::from(byte(0)) % 65,
            max_header_bytes: 16 + 32 * usize::from(byte(1)),
            allowed_origins: if byte(2) & 2 != 0 {
                vec!["https://chat.example".to_owned()]
            } else {
                Vec::new()
            },
            path: if byte(2) & 4 != 0 { "/chat" } else { "/ws" }.to_owned(),
            ..WsConfig::default()
        };
        let admitted = byte(2) & 1 != 0;
        let mut pages = Pages::new();
        pages.insert(
            "/".to_owned(),
            Page {
                content_type: "text/html".to_owned(),
                body: Bytes::from_static(b"<p>chat</p>"),
            },
        );
        let listener = &self.listener;
        let exchange = async {
            let (client, accepted) =
                futures_util::future::join(TcpStream::connect(listener.local_addr()?), async {
                    listener.accept().await
                })
                .await;
            let (mut client, (mut server, _)) = (client?, accepted?);
            let client_side = async move {
                let mut response = Vec::new();
                // The server may refuse (and close) before it has read everything.
                let _ = client.write_all(request).await;
                let _ = client.shutdown().await;
                let _ = client.read_to_end(&mut response).await;
                response
            };
            let server_side = async move {
                let result = handshake::accept(&mut server, &config, &pages, admitted).await;
                // Read the rest (what a WebSocket reads next), which also keeps closing
                // from sending a reset over the answer.
                let mut rest = Vec::new();
                let _ = server.read_to_end(&mut rest).await;
                (result, rest, config, pages)
            };
            let (response, (result, rest, config, pages)) =
                futures_util::future::join(client_side, server_side).await;
            Ok::<_, std::io::Error>((response, result, rest, config, pages))
        };
        let (response, result, rest, config, pages) = self
            .runtime
            .block_on(async { tokio::time::timeout(HANG, exchange).await })
            .unwrap_or_else(|_| panic!("the handshake did not end within {HANG:?}"))
            .expect("a loopback connection");
        let result = result.expect("the handshake does not fail on a loopback connection");
        let upgraded = result.map(|early| (early, rest));
        check_handshake(request, &config, &pages, admitted, &response, upgraded);
    }
}

/// What a request head calls for.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Nothing: the head never completed.
    Silence,
    Status(u16),
    /// 101, with the key and the length of the head.
    Upgrade(String, usize),
}

/// The answer RFC 6455 §4.2.1 and the listener's settings call for, from `httparse`.
fn expected_answer(request: &[u8], config: &WsConfig, pages: &Pages, admitted: bool) -> Answer {
    let limited = &request[..request.len().min(config.max_header_bytes)];
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(limited) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if request.len() >= config.max_header_bytes => {
            return Answer::Status(431);
        }
        Ok(httparse::Status::Partial) => return Answer::Silence,
        Err(httparse::Error::TooManyHeaders) => return Answer::Status(431),
        Err(_) => return Answer::Status(400),
    };
    if parsed.version != Some(1) {
        return Answer::Status(505);
    }
    let method = parsed.method.unwrap_or_default();
    let path = parsed.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let headers = &*parsed.headers;
    let values = |name: &'static str| header_values(headers, name);
    let lists = |name: &'static str, token: &str| {
        values(name).any(|value| {
            std::str::from_utf8(value)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = lists("upgrade", "websocket");
    if !upgrade && pages.contains_key(path) {
        return Answer::Status(if method == "GET" || method == "HEAD" {
            200
        } else {
            405
        });
    }
    if path != config.path {
        return Answer::Status(404);
    }
    if method != "GET" {
        return Answer::Status(405);
    }
    if !upgrade || !lists("connection", "upgrade") {
        return Answer::Status(426);
    }
    // The last of a repeated header counts.
    if values("sec-websocket-version").last() != Some(b"13") {
        return Answer::Status(426);
    }
    let key = values("sec-websocket-key")
        .last()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_owned());
    let Some(key) = key.filter(|key| {
        key.len() == 24
            && base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|raw| raw.len() == 16)
    }) else {
        return Answer::Status(400);
    };
    let origin = values("origin")
        .last()
        .map(|v| String::from_utf8_lossy(v).trim().to_owned());
    if let Some(origin) = origin {
        let allowed = config.allowed_origins.is_empty()
            || config
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&origin));
        if !allowed {
            return Answer::Status(403);
        }
    }
    if !admitted {
        return Answer::Status(503);
    }
    Answer::Upgrade(key, len)
}

/// The values of a request's headers of this name, in order.
fn header_values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn check_handshake(
    request: &[u8],
    config: &WsConfig,
    pages: &Pages,
    admitted: bool,
    response: &[u8],
    upgraded: Option<(bytes::BytesMut, Vec<u8>)>,
) {
    let expected = expected_answer(request, config, pages, admitted);
    let shown = || String::from_utf8_lossy(response).into_owned();
    if expected == Answer::Silence {
        assert!(
            response.is_empty(),
            "an answer to an incomplete head: {}",
            shown()
        );
        assert!(upgraded.is_none());
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(response) else {
        panic!("not an HTTP response: {}", shown());
    };
    let status = parsed.code.unwrap_or_default();
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let body = &response[head..];
    match expected {
        Answer::Upgrade(key, len) => {
            assert_eq!(status, 101, "{}", shown());
            let mut sha1 = Sha1::new();
            sha1.update(key.as_bytes());
            sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
            assert_eq!(header("sec-websocket-accept"), Some(accept.as_bytes()));
            assert!(header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")));
            assert!(body.is_empty(), "bytes after a 101");
            // What arrived with the head is handed on, the rest is read from the socket
            // next: together, exactly the bytes after the head.
            let (early, rest) = upgraded.expect("an upgrade hands the connection on");
            assert_eq!(
                [&early[..], &rest[..]].concat(),
                &request[len..],
                "the bytes after the head"
            );
        }
        Answer::Status(expected) => {
            assert_eq!(status, expected, "{}", shown());
            assert!(upgraded.is_none(), "a refused request was upgraded");
            let length = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
                .expect("a Content-Length");
            if body.is_empty() && status == 200 {
                // HEAD: the length of what a GET would get.
            } else {
                assert_eq!(body.len(), length, "Content-Length: {}", shown());
            }
            assert_eq!(header("connection"), Some(&b"close"[..]));
        }
        Answer::Silence => unreachable!("returned above"),
    }
}
