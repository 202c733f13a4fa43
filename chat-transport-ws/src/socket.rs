//! One upgraded connection as the engine's `Stream<Inbound>` and `Sink<Outbound>`, written
//! straight onto the TCP socket.
//!
//! - **Writes** append each frame (a header and the engine's already encoded bytes) to one
//!   buffer and hand the batch to the socket in as few system calls as it takes. The buffer
//!   is freed whenever it has all been written, so an idle connection keeps none.
//! - **Reads** go through a stack buffer. Only the bytes of a frame that has not fully
//!   arrived are kept between reads, so an idle connection keeps no read buffer either.
//! - The reader answers pings and closes itself (RFC 6455 §5.5), through the same buffer
//!   as the writer, so that control frames never split a data frame. A pong that cannot
//!   go out at once waits in one slot, replaced by the next ping's (§5.5.3 allows
//!   answering only the latest), and joins the buffer between two frames: a peer that
//!   pings and never reads cannot make anything grow. When the writer is not itself
//!   waiting for the socket, the reader waits for it to take what is left, so a pong is
//!   never held back until the engine's next frame.

use std::io::{self, Read as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use chat_core::engine::{Inbound, Outbound};
use futures_util::{Sink, Stream};
use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::server::IpSlot;
use crate::wire::{self, Header, Violation};

/// Bytes read per system call into the stack buffer.
const READ_CHUNK: usize = 4096;
/// The largest single read straight into a frame that is still arriving.
const READ_MAX: usize = 64 * 1024;

struct Shared {
    tcp: TcpStream,
    out: Mutex<Out>,
    /// The connection's place among its address's, given back with the socket.
    _slot: Option<IpSlot>,
}

/// What waits to be written, in order.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// The payload of the latest ping not yet answered, while `buf` is busy.
    pong: Option<Vec<u8>>,
    /// The writer is waiting for the socket to take `buf` (and will be woken for it).
    writer_waiting: bool,
    /// A close frame was queued: nothing follows it.
    close_sent: bool,
    /// A write failed; every later flush fails too.
    broken: bool,
}

impl Out {
    fn unwritten(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Queues a close frame, unless one was queued already.
    fn close(&mut self, code: u16, reason: &str) {
        self.put_waiting_pong();
        if !self.close_sent {
            wire::put_close(self.buf_for(wire::MAX_HEADER + 125), code, reason);
            self.close_sent = true;
        }
    }

    /// Answers a ping: at once when nothing else waits, else in the pong slot.
    fn pong(&mut self, payload: &[u8]) {
        if self.close_sent {
            return;
        }
        if self.unwritten() == 0 {
            self.put_frame(wire::OP_PONG, payload);
        } else {
            self.pong = Some(payload.to_vec());
        }
    }

    /// Moves the waiting pong, if any, to the end of the buffer (a frame boundary):
    /// before whatever frame is queued next.
    fn put_waiting_pong(&mut self) {
        if let Some(payload) = self.pong.take() {
            if !self.close_sent {
                self.put_frame(wire::OP_PONG, &payload);
            }
        }
    }

    /// Appends a whole frame: its header and its payload.
    fn put_frame(&mut self, opcode: u8, payload: &[u8]) {
        let buf = self.buf_for(wire::MAX_HEADER + payload.len());
        wire::put_header(buf, opcode, payload.len());
        buf.extend_from_slice(payload);
    }

    /// Writes what it can without waiting.
    fn write_now(&mut self, tcp: &TcpStream) {
        loop {
            if self.unwritten() == 0 {
                // Between two frames: the waiting pong, if any, goes now.
                self.put_waiting_pong();
                if self.unwritten() == 0 {
                    return;
                }
            }
            if self.broken {
                return;
            }
            match tcp.try_write(&self.buf[self.written..]) {
                Ok(0) => self.broken = true,
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.broken = true,
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.written += n;
        if self.written == self.buf.len() {
            // All out: the buffer goes back to the thread's spare, so an idle connection
            // keeps none and a busy thread allocates none.
            give_back(std::mem::take(&mut self.buf));
            self.written = 0;
        }
    }

    /// The buffer to append a frame of about `len` bytes to.
    fn buf_for(&mut self, len: usize) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf = SPARE.take();
        }
        self.buf.reserve(len);
        &mut self.buf
    }
}

/// Write buffers kept at most this large for reuse.
const SPARE_MAX: usize = 64 * 1024;

thread_local! {
    /// A worker thread's spare write buffer. A flush usually fills and empties a buffer
    /// within one poll on one thread, so the same memory serves every connection the
    /// thread writes to.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() > SPARE_MAX {
        return;
    }
    buf.clear();
    SPARE.with(|spare| {
        // Keep the larger of the two.
        let old = spare.take();
        spare.set(if old.capacity() >= buf.capacity() {
            old
        } else {
            buf
        });
    });
}

/// Splits an upgraded socket into the engine's two halves. `read` holds the bytes that
/// arrived with the handshake; frames and messages over `max_message` bytes are
/// [`Inbound::TooLarge`]; the writer asks for a flush once `write_buffer` bytes wait.
pub(crate) fn split(
    tcp: TcpStream,
    read: BytesMut,
    max_message: usize,
    write_buffer: usize,
    slot: Option<IpSlot>,
) -> (Reader, Writer) {
    let shared = Arc::new(Shared {
        tcp,
        out: Mutex::new(Out::default()),
        _slot: slot,
    });
    let reader = Reader {
        shared: shared.clone(),
        pending: read,
        want: 0,
        arrived: Arrived::default(),
        partial: None,
        keep_binary: false,
        // Frames are at most this plus a 14-byte header: `want` fits in a u32.
        max_message: u32::try_from(max_message)
            .unwrap_or(u32::MAX)
            .min(u32::MAX - 16),
        done: false,
    };
    (
        reader,
        Writer {
            shared,
            write_buffer,
        },
    )
}

/// A message whose first fragments have arrived.
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// For text: the length of `data` known to be valid UTF-8. What follows it is at most
    /// the start of one character, which the next fragment completes.
    checked: usize,
}

impl Partial {
    /// Checks text as it arrives (RFC 6455 §8.1: fail as soon as the bytes cannot be
    /// UTF-8, not when the message ends), from where the previous fragment left off.
    fn check_text(&mut self) -> Result<(), Violation> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            // Bytes that no continuation can make valid.
            Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
            // A character cut at the end of the fragment: the next one may complete it.
            Err(e) => self.checked += e.valid_up_to(),
        }
        Ok(())
    }
}

/// The part of a text frame checked while the rest is still arriving.
#[derive(Default, Clone, Copy)]
struct Arrived {
    unmasked: u32,
    valid: u32,
}

/// Checks the bytes of a text frame that arrived since the last check, so that text that
/// can no longer be UTF-8 fails while its frame is still arriving (RFC 6455 §8.1), not
/// when the frame ends. `tail` is what the message's earlier fragments left unchecked (at
/// most the start of one character). Every byte is unmasked once and checked at most
/// twice (once here, once when its frame or fragment is complete): no rescans.
fn check_arriving(
    payload: &mut [u8],
    mask: [u8; 4],
    tail: &[u8],
    arrived: &mut Arrived,
) -> Result<(), Violation> {
    let (unmasked, mut valid) = (arrived.unmasked as usize, arrived.valid as usize);
    wire::unmask(&mut payload[unmasked..], mask, unmasked);
    // Frames are at most `max_message` (a u32) long.
    arrived.unmasked = payload.len() as u32;
    if valid == 0 && !tail.is_empty() {
        // Complete the earlier fragment's last character with this frame's first bytes.
        let mut joined = [0u8; 8];
        let take = payload.len().min(4);
        joined[..tail.len()].copy_from_slice(tail);
        joined[tail.len()..tail.len() + take].copy_from_slice(&payload[..take]);
        match std::str::from_utf8(&joined[..tail.len() + take]) {
            Err(e) if e.error_len().is_some() && e.valid_up_to() < tail.len() => {
                return Err(Violation::InvalidUtf8);
            }
            Err(e) if e.valid_up_to() < tail.len() => return Ok(()),
            Ok(_) => valid = take,
            Err(e) => valid = e.valid_up_to() - tail.len(),
        }
    }
    match std::str::from_utf8(&payload[valid..]) {
        Ok(_) => valid = payload.len(),
        Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
        Err(e) => valid += e.valid_up_to(),
    }
    arrived.valid = valid as u32;
    Ok(())
}

/// What one frame amounts to.
enum Step {
    Item(Msg),
    /// A fragment, or nothing the engine needs to hear of.
    Again,
    /// The peer closed.
    End,
}

/// The reading half: client frames, reassembled into the engine's [`Inbound`] items. Kept
/// small (it lives in every connection's task): what only a fragmented message needs is
/// boxed.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    /// Bytes read and not yet parsed: empty (and unallocated) between frames.
    pending: BytesMut,
    /// The length of the frame at the front of `pending`, once known.
    want: u32,
    /// Of a text frame still arriving: how much of its payload is unmasked, and how much
    /// of that is known to be UTF-8 (what lies between is at most the start of one
    /// character). Both 0 between frames.
    arrived: Arrived,
    max_message: u32,
    partial: Option<Box<Partial>>,
    /// Whether binary messages keep their bytes (the engine refuses them unread).
    pub(crate) keep_binary: bool,
    done: bool,
}

/// A complete message.
pub(crate) enum Msg {
    Text(Bytes),
    /// Empty unless the reader keeps binary payloads.
    Binary(Bytes),
    /// A ping or a pong (a ping is answered already).
    Heartbeat,
}

/// What a read brings.
pub(crate) enum Read {
    Msg(Msg),
    /// Over the message limit: the reader stops; the caller closes with 1009.
    TooLarge,
}

impl Reader {
    /// Parses the frame at the front of `pending`; `Ok(None)` when it has not all arrived.
    fn next_frame(&mut self) -> Result<Option<Step>, Violation> {
        let Some(header) = wire::parse_header(&self.pending)? else {
            return Ok(None);
        };
        let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
        if !header.is_control()
            && header.len.saturating_add(so_far as u64) > u64::from(self.max_message)
        {
            return Err(Violation::TooLarge);
        }
        // Below `max_message` (or 125 for a control frame), so it fits in a usize.
        let total = header.size + header.len as usize;
        if self.pending.len() < total {
            self.want = u32::try_from(total).unwrap_or(u32::MAX);
            let tail = match (header.opcode, &self.partial) {
                // (A new message inside a fragmented one fails when its frame is whole.)
                (wire::OP_TEXT, None) => Some(&[][..]),
                (wire::OP_CONTINUATION, Some(partial)) if partial.text => {
                    Some(&partial.data[partial.checked..])
                }
                _ => None,
            };
            if let Some(tail) = tail {
                let payload = &mut self.pending[header.size..];
                check_arriving(payload, header.mask, tail, &mut self.arrived)?;
            }
            return Ok(None);
        }
        self.want = 0;
        let unmasked = std::mem::take(&mut self.arrived).unmasked as usize;
        let payload = &mut self.pending[header.size + unmasked..total];
        wire::unmask(payload, header.mask, unmasked);
        let step = self.on_frame(header, total);
        self.pending.advance(total);
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        }
        step.map(Some)
    }

    fn on_frame(&mut self, header: Header, total: usize) -> Result<Step, Violation> {
        let payload = &self.pending[header.size..total];
        match header.opcode {
            wire::OP_TEXT | wire::OP_BINARY => {
                if self.partial.is_some() {
                    return Err(Violation::Protocol("a new message inside a fragmented one"));
                }
                let text = header.opcode == wire::OP_TEXT;
                if header.fin {
                    return message(text, payload, self.keep_binary).map(Step::Item);
                }
                let mut partial = Box::new(Partial {
                    text,
                    data: payload.to_vec(),
                    checked: 0,
                });
                partial.check_text()?;
                self.partial = Some(partial);
                Ok(Step::Again)
            }
            wire::OP_CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Violation::Protocol("a continuation with no message"));
                };
                partial.data.extend_from_slice(payload);
                if !header.fin {
                    partial.check_text()?;
                    return Ok(Step::Again);
                }
                let Partial { text, data, .. } = *self.partial.take().expect("checked above");
                message(text, &data, self.keep_binary).map(Step::Item)
            }
            wire::OP_PING => {
                let mut out = self.shared.out.lock();
                out.pong(payload);
                out.write_now(&self.shared.tcp);
                Ok(Step::Item(Msg::Heartbeat))
            }
            wire::OP_PONG => Ok(Step::Item(Msg::Heartbeat)),
            _ => {
                // OP_CLOSE: `parse_header` lets no other opcode through.
                let code = match *payload {
                    [] => wire::CLOSE_NORMAL,
                    [_] => return Err(Violation::Protocol("a close payload of one byte")),
                    [hi, lo, ref reason @ ..] => {
                        let code = u16::from_be_bytes([hi, lo]);
                        if !wire::valid_close_code(code) {
                            return Err(Violation::Protocol("an invalid close code"));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(Violation::InvalidUtf8);
                        }
                        code
                    }
                };
                let mut out = self.shared.out.lock();
                // Echo the code (§5.5.1), unless this close answers ours.
                out.close(code, "");
                out.write_now(&self.shared.tcp);
                Ok(Step::End)
            }
        }
    }

    /// Reads more bytes: into the stack buffer between frames, straight into `pending`
    /// while a frame is arriving.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.shared.tcp.poll_read_ready(cx))?;
            let read = if self.pending.is_empty() {
                let mut chunk = [0u8; READ_CHUNK];
                let read = read_draining(&self.shared.tcp, &mut chunk);
                if let Ok(n) = read {
                    self.pending.extend_from_slice(&chunk[..n]);
                }
                read
            } else {
                let room = (self.want as usize)
                    .saturating_sub(self.pending.len())
                    .clamp(READ_CHUNK, READ_MAX);
                self.pending.reserve(room);
                self.shared.tcp.try_read_buf(&mut self.pending)
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    /// Sees that what the reader queued (a pong, a close) reaches the socket: when the
    /// writer is not waiting for the socket itself, the reader does, with its own waker.
    /// (A socket keeps one waker for writing: taking it from a waiting writer would
    /// stall the writer.)
    fn push_out(&self, cx: &mut Context<'_>) {
        let tcp = &self.shared.tcp;
        let mut out = self.shared.out.lock();
        while !out.writer_waiting && !out.broken && (out.unwritten() > 0 || out.pong.is_some()) {
            match tcp.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => out.write_now(tcp),
                Poll::Ready(Err(_)) => out.broken = true,
                Poll::Pending => return,
            }
        }
    }

    fn end(&mut self) {
        self.done = true;
        self.pending = BytesMut::new();
        self.partial = None;
        self.arrived = Arrived::default();
    }
}

/// Reads into `buf`. A read that does not fill `buf` has drained the socket: its read
/// readiness is cleared there and then, as tokio's own `AsyncRead` does, so that the next
/// poll waits for the driver instead of spending a `recv` on `EAGAIN` (one system call
/// in three on a request that answers with one write). The readiness cleared is the one
/// seen before the read: data arriving after it is a new event, and wakes the reader.
fn read_draining(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(tcp);
    let mut short = None;
    let read = tcp.try_io(Interest::READABLE, || {
        let n = (&*socket).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            // Not an error: `try_io` clears the readiness it saw when told `WouldBlock`.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => read,
    }
}

/// A complete message. Text must be UTF-8 (RFC 6455 §8.1).
fn message(text: bool, payload: &[u8], keep_binary: bool) -> Result<Msg, Violation> {
    if !text {
        let kept = if keep_binary {
            Bytes::copy_from_slice(payload)
        } else {
            Bytes::new()
        };
        return Ok(Msg::Binary(kept));
    }
    if std::str::from_utf8(payload).is_err() {
        return Err(Violation::InvalidUtf8);
    }
    Ok(Msg::Text(Bytes::copy_from_slice(payload)))
}

impl Stream for Reader {
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let read = ready!(self.get_mut().poll_read(cx));
        Poll::Ready(read.map(|read| match read {
            Read::Msg(Msg::Text(text)) => Inbound::Text(text),
            Read::Msg(Msg::Binary(_)) => Inbound::Binary,
            Read::Msg(Msg::Heartbeat) => Inbound::Heartbeat,
            Read::TooLarge => Inbound::TooLarge,
        }))
    }
}

impl Reader {
    /// The next message; `None` once the peer closed, broke the protocol (answered with
    /// 1002 or 1007 already) or went away.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Read>> {
        let this = self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_frame() {
                Ok(None) => {}
                Ok(Some(Step::Item(item))) => return Poll::Ready(Some(Read::Msg(item))),
                Ok(Some(Step::Again)) => continue,
                Ok(Some(Step::End)) => {
                    this.end();
                    return Poll::Ready(None);
                }
                // The caller (the engine) answers with 1009.
                Err(Violation::TooLarge) => {
                    this.end();
                    return Poll::Ready(Some(Read::TooLarge));
                }
                Err(violation) => {
                    let (code, reason) = match violation {
                        Violation::Protocol(reason) => (wire::CLOSE_PROTOCOL_ERROR, reason),
                        _ => (wire::CLOSE_INVALID_PAYLOAD, "text that is not UTF-8"),
                    };
                    tracing::debug!(reason, "websocket protocol violation: closing");
                    let mut out = this.shared.out.lock();
                    out.close(code, reason);
                    out.write_now(&this.shared.tcp);
                    drop(out);
                    this.end();
                    return Poll::Ready(None);
                }
            }
            let filled = match this.fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    this.push_out(cx);
                    return Poll::Pending;
                }
            };
            match filled {
                Ok(0) | Err(_) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(_) => {}
            }
        }
    }
}

/// The writing half: the engine's frames, straight onto the socket.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    write_buffer: usize,
}

impl Writer {
    /// Queues a whole message (for the conformance echo; the engine goes through `Sink`).
    pub(crate) fn queue(&self, text: bool, payload: &[u8]) {
        let mut out = self.shared.out.lock();
        if out.close_sent {
            return;
        }
        out.put_waiting_pong();
        out.put_frame(if text { wire::OP_TEXT } else { wire::OP_BINARY }, payload);
    }

    /// Queues a close frame (unless one was).
    pub(crate) fn queue_close(&self, code: u16, reason: &str) {
        self.shared.out.lock().close(code, reason);
    }

    pub(crate) fn flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tcp = &self.shared.tcp;
        let mut out = self.shared.out.lock();
        loop {
            out.write_now(tcp);
            if out.broken {
                out.writer_waiting = false;
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if out.unwritten() == 0 {
                out.writer_waiting = false;
                return Poll::Ready(Ok(()));
            }
            match tcp.poll_write_ready(cx) {
                Poll::Pending => {
                    out.writer_waiting = true;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    out.writer_waiting = false;
                    out.broken = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => {}
            }
        }
    }
}

impl Sink<Outbound> for Writer {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.out.lock().unwritten() < self.write_buffer {
            return Poll::Ready(Ok(()));
        }
        self.flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Outbound) -> io::Result<()> {
        let mut out = self.shared.out.lock();
        if out.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if out.close_sent {
            // Nothing may follow a close frame.
            return Ok(());
        }
        out.put_waiting_pong();
        match item {
            Outbound::Frame(frame) => out.put_frame(wire::OP_TEXT, frame.as_bytes()),
            Outbound::Close(code) => out.close(code.code(), code.reason()),
            // A ping; `Outbound` is non-exhaustive: anything newer is a heartbeat at worst.
            _ => out.put_frame(wire::OP_PING, &[]),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// Checks `text` (after `tail`, what earlier fragments left unchecked) as it would
    /// arrive in pieces ending at `cuts`, then whole: the first piece that fails, if any.
    fn arriving(tail: &[u8], text: &[u8], cuts: &[usize]) -> Result<Vec<u8>, usize> {
        let mut payload = text.to_vec();
        wire::unmask(&mut payload, MASK, 0);
        let mut arrived = Arrived::default();
        for &cut in cuts.iter().chain([&text.len()]) {
            if check_arriving(&mut payload[..cut], MASK, tail, &mut arrived).is_err() {
                return Err(cut);
            }
        }
        Ok(payload)
    }

    #[test]
    fn characters_cut_anywhere_pass_and_arrive_unmasked() {
        let text = "a€b€".as_bytes();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                assert_eq!(
                    arriving(&[], text, &[first, second]).as_deref(),
                    Ok(text),
                    "{first} {second}"
                );
            }
        }
        // The euro sign begun by an earlier fragment (E2), finished by this frame.
        let rest = [0x82, 0xAC, b'x', 0xE2, 0x82, 0xAC];
        for cut in 0..=rest.len() {
            assert_eq!(arriving(&[0xE2], &rest, &[cut]).as_deref(), Ok(&rest[..]));
        }
    }

    #[test]
    fn text_that_can_no_longer_be_utf8_fails_at_the_piece_that_shows_it() {
        // E2 28: no continuation can follow E2 with 28. Known once the 28 is in.
        let text = b"ab\xe2\x28cd";
        for cut in 0..text.len() {
            let expected = if cut >= 4 { cut } else { text.len() };
            assert_eq!(arriving(&[], text, &[cut]), Err(expected), "{cut}");
        }
        for cut in 0..3 {
            let expected = if cut >= 1 { cut } else { 3 };
            assert_eq!(arriving(&[0xE2], b"\x28ab", &[cut]), Err(expected), "{cut}");
        }
    }
}
