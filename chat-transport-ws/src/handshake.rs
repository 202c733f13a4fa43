//! The HTTP side of a connection: the WebSocket upgrade (RFC 6455 §4.2), the refusals,
//! and the listener's static pages.
//!
//! The request head is read into one buffer of at most `max_header_bytes`, with at most
//! `max_headers` headers; anything larger is refused with 431 before it is parsed further.

use std::collections::HashMap;
use std::io;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::server::WsConfig;

/// The GUID of RFC 6455 §1.3, hashed with the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A file the listener serves at a path of its own, for a plain `GET`.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub content_type: String,
    pub body: Bytes,
}

pub(crate) type Pages = HashMap<String, Page>;

/// What a request head says, once parsed.
#[derive(Debug, Default)]
struct Head {
    method: String,
    path: String,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    version_13: bool,
    key: Option<String>,
    origin: Option<String>,
    /// Bytes of the buffer the head took; the rest arrived early (a first frame).
    len: usize,
}

enum Parsed {
    Complete(Head),
    Partial,
    /// Malformed, or over a limit: answer with this status and stop.
    Refuse(u16, &'static str),
}

fn parse(buf: &[u8], max_headers: usize) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(431, "too many header fields");
        }
        Err(_) => return Parsed::Refuse(400, "malformed HTTP request"),
    };
    let mut head = Head {
        method: request.method.unwrap_or_default().to_owned(),
        path: request
            .path
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned(),
        len,
        ..Head::default()
    };
    if request.version != Some(1) {
        return Parsed::Refuse(505, "HTTP/1.1 is required");
    }
    let has_token = |value: &[u8], token: &str| {
        std::str::from_utf8(value).is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= has_token(header.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= has_token(header.value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.version_13 = header.value == b"13";
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(String::from_utf8_lossy(header.value).trim().to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.key = std::str::from_utf8(header.value)
                .ok()
                .map(|key| key.trim().to_owned());
        }
    }
    Parsed::Complete(head)
}

/// The value of `Sec-WebSocket-Accept` for a client's key.
fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Whether a `Sec-WebSocket-Key` is what §4.1 requires: 16 bytes in base64.
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() == 16)
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        403 => "Forbidden",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Writes a whole response and closes the sending side.
async fn respond(
    tcp: &mut TcpStream,
    status: u16,
    extra: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n{extra}Connection: close\r\n\r\n",
        status_text(status),
        body.len(),
    )
    .into_bytes();
    if with_body {
        response.extend_from_slice(body);
    }
    tcp.write_all(&response).await?;
    tcp.shutdown().await
}

async fn refuse(tcp: &mut TcpStream, status: u16, text: &str, extra: &str) -> io::Result<()> {
    respond(
        tcp,
        status,
        extra,
        "text/plain; charset=utf-8",
        text.as_bytes(),
        true,
    )
    .await
}

/// [`accept`] for a server that takes the upgrade on any path (the conformance echo).
pub(crate) async fn accept_any_path(
    tcp: &mut TcpStream,
    config: &WsConfig,
    pages: &Pages,
) -> io::Result<Option<BytesMut>> {
    accept_on(tcp, config, pages, true, None).await
}

/// Reads the request head and answers it. `Ok(Some(bytes))` when the connection is now a
/// WebSocket (`bytes`: what arrived after the head); `Ok(None)` when it was answered
/// otherwise (a page, a refusal) and is done.
pub(crate) async fn accept(
    tcp: &mut TcpStream,
    config: &WsConfig,
    pages: &Pages,
    admitted: bool,
) -> io::Result<Option<BytesMut>> {
    accept_on(tcp, config, pages, admitted, Some(&config.path)).await
}

/// [`accept`], with the WebSocket route at `path` (`None`: any path).
async fn accept_on(
    tcp: &mut TcpStream,
    config: &WsConfig,
    pages: &Pages,
    admitted: bool,
    path: Option<&str>,
) -> io::Result<Option<BytesMut>> {
    let mut buf: Vec<u8> = Vec::new();
    let head = loop {
        if buf.len() >= config.max_header_bytes {
            refuse(tcp, 431, "request head too large", "").await?;
            return Ok(None);
        }
        buf.reserve((config.max_header_bytes - buf.len()).min(1024));
        tcp.readable().await?;
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        let limited = &buf[..buf.len().min(config.max_header_bytes)];
        match parse(limited, config.max_headers) {
            Parsed::Partial => continue,
            Parsed::Refuse(status, text) => {
                refuse(tcp, status, text, "").await?;
                return Ok(None);
            }
            Parsed::Complete(head) => break head,
        }
    };
    let is_get = head.method == "GET";
    if !head.upgrade_websocket {
        if let Some(page) = pages.get(&head.path) {
            if !is_get && head.method != "HEAD" {
                refuse(tcp, 405, "only GET and HEAD", "Allow: GET, HEAD\r\n").await?;
            } else {
                respond(tcp, 200, "", &page.content_type, &page.body, is_get).await?;
            }
            return Ok(None);
        }
    }
    if path.is_some_and(|path| head.path != path) {
        refuse(tcp, 404, "no such route", "").await?;
        return Ok(None);
    }
    if !is_get {
        refuse(tcp, 405, "a WebSocket upgrade is a GET", "Allow: GET\r\n").await?;
        return Ok(None);
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        let text = "this is a WebSocket endpoint: send an upgrade request";
        refuse(tcp, 426, text, "Upgrade: websocket\r\n").await?;
        return Ok(None);
    }
    if !head.version_13 {
        let text = "only WebSocket version 13 is spoken";
        refuse(tcp, 426, text, "Sec-WebSocket-Version: 13\r\n").await?;
        return Ok(None);
    }
    let Some(key) = head.key.as_deref().filter(|key| valid_key(key)) else {
        refuse(
            tcp,
            400,
            "a Sec-WebSocket-Key of 16 bytes in base64 is required",
            "",
        )
        .await?;
        return Ok(None);
    };
    if let Some(origin) = &head.origin {
        let allowed = config.allowed_origins.is_empty()
            || config
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin));
        if !allowed {
            refuse(tcp, 403, "this origin may not open a WebSocket here", "").await?;
            return Ok(None);
        }
    }
    if !admitted {
        refuse(tcp, 503, "the server is full or shutting down", "").await?;
        return Ok(None);
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    tcp.write_all(response.as_bytes()).await?;
    Ok(Some(BytesMut::from(&buf[head.len..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key("not base64 at all, no!!"));
    }

    #[test]
    fn a_head_is_parsed_with_tokens_in_lists() {
        let request = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81";
        let Parsed::Complete(head) = parse(request, 8) else {
            panic!("complete");
        };
        assert_eq!(head.path, "/ws");
        assert!(head.upgrade_websocket && head.connection_upgrade && head.version_13);
        assert_eq!(head.len, request.len() - 1);
        assert!(matches!(parse(&request[..30], 8), Parsed::Partial));
        assert!(matches!(parse(request, 3), Parsed::Refuse(431, _)));
        assert!(matches!(
            parse(b"GET / HTTP/1.0\r\n\r\n", 8),
            Parsed::Refuse(505, _)
        ));
        assert!(matches!(
            parse(b"\x00\x01 nonsense\r\n\r\n", 8),
            Parsed::Refuse(400, _)
        ));
    }
}
