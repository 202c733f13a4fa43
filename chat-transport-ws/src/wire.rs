//! RFC 6455 framing, server side: the headers of the frames we write, and the parsing of
//! the (masked) frames a client writes. No extensions are negotiated, so the reserved
//! bits must be zero.

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The longest header a server frame has: 2 bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// Close codes this transport sends on its own (the engine's are in `chat_core`).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Appends the header of an unmasked, final frame of `len` payload bytes.
pub(crate) fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a whole close frame: the code and its (short, ASCII) reason.
pub(crate) fn put_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    // A control frame's payload is at most 125 bytes.
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    put_header(out, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Why the peer's bytes cannot be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// Broken framing: close with 1002.
    Protocol(&'static str),
    /// A text message (or close reason) that is not UTF-8: close with 1007.
    InvalidUtf8,
    /// A frame or message over the limit: the engine closes with 1009.
    TooLarge,
}

/// The parsed header of a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    /// Header bytes, mask included.
    pub size: usize,
    /// Payload bytes.
    pub len: u64,
}

impl Header {
    pub(crate) fn is_control(&self) -> bool {
        self.opcode >= OP_CLOSE
    }
}

/// Parses a client frame's header from the start of `buf`: `Ok(None)` when more bytes are
/// needed. Everything the RFC requires of a header is checked here, before any payload is
/// read, so a hostile length costs nothing.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(Violation::Protocol("reserved opcode"));
    }
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol("client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut raw = [0; 8];
                raw.copy_from_slice(bytes);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("payload length with its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(Violation::Protocol("control frame over 125 bytes"));
        }
    }
    let Some(key) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [key[0], key[1], key[2], key[3]],
        size: at + 4,
        len,
    }))
}

/// XORs `data` with the masking key, the first byte of `data` being payload byte `offset`.
pub(crate) fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Whether a peer may send this close code (RFC 6455 §7.4 and the IANA registry).
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, opcode, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask, 0);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, expected) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            put_header(&mut out, OP_TEXT, len);
            assert_eq!(out.len(), expected, "length {len}");
            assert_eq!(out[0], 0x81);
        }
    }

    #[test]
    fn a_masked_frame_parses_back_at_every_length_form() {
        for len in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = masked(true, OP_BINARY, &payload, [1, 2, 3, 4]);
            for cut in [0, 1, frame.len().min(3), frame.len().min(9)] {
                if cut < frame.len() - len {
                    assert_eq!(parse_header(&frame[..cut]), Ok(None), "cut {cut} len {len}");
                }
            }
            let header = parse_header(&frame).unwrap().unwrap();
            assert_eq!(
                (header.fin, header.opcode, header.len),
                (true, OP_BINARY, len as u64)
            );
            let mut body = frame[header.size..].to_vec();
            // Unmasking in two pieces at an odd offset gives the same as in one.
            let split = body.len() / 3;
            let (a, b) = body.split_at_mut(split);
            unmask(a, header.mask, 0);
            unmask(b, header.mask, split);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn broken_headers_are_protocol_errors() {
        let unmasked = [0x81, 0x00];
        assert!(matches!(
            parse_header(&unmasked),
            Err(Violation::Protocol(_))
        ));
        let rsv = [0xC1, 0x80, 0, 0, 0, 0];
        assert!(matches!(parse_header(&rsv), Err(Violation::Protocol(_))));
        for opcode in [3u8, 7, 0xB, 0xF] {
            let frame = [0x80 | opcode, 0x80, 0, 0, 0, 0];
            assert!(matches!(parse_header(&frame), Err(Violation::Protocol(_))));
        }
        let fragmented_ping = masked(false, OP_PING, b"", [9, 9, 9, 9]);
        assert!(matches!(
            parse_header(&fragmented_ping),
            Err(Violation::Protocol(_))
        ));
        let long_ping = masked(true, OP_PING, &[0; 126], [9, 9, 9, 9]);
        assert!(matches!(
            parse_header(&long_ping),
            Err(Violation::Protocol(_))
        ));
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(matches!(parse_header(&huge), Err(Violation::Protocol(_))));
    }

    #[test]
    fn a_declared_huge_length_is_known_before_any_payload() {
        // 100 MiB declared, nothing of it sent.
        let mut frame = vec![0x82, 0xFF];
        frame.extend_from_slice(&(100u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        let header = parse_header(&frame).unwrap().unwrap();
        assert_eq!(header.len, 100 << 20);
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4008, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000] {
            assert!(!valid_close_code(bad), "{bad}");
        }
        let mut out = Vec::new();
        put_close(&mut out, 4008, "slow consumer");
        assert_eq!(&out[..4], &[0x88, 15, 0x0F, 0xA8]);
    }
}
