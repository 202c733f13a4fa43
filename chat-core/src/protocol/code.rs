//! Error codes and close codes of protocol v1.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, a field missing or of the wrong kind, an
    /// invalid id.
    BadRequest,
    /// A bad token, or a request before `hello`.
    Unauthorized,
    /// Not a member, or the authorizer refused.
    Forbidden,
    /// Reserved for extensions.
    NotFound,
    /// `body` or `meta` over the server's limits.
    TooLarge,
    /// The connection sends faster than its limit; the frame was not acted on.
    RateLimited,
    /// The store or broker is unreachable; nothing was stored; retry with the same `cid`.
    Unavailable,
    /// A bug; nothing was stored.
    Internal,
    /// A code this version does not know (sent by a newer server). Never sent by this one.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WebSocket close codes protocol v1 gives a meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1001: the server is shutting down; reconnect (to another node) and resume.
    ShuttingDown,
    /// 1009: a frame over the server's frame limit (default 64 KiB).
    TooBig,
    /// 4001: unauthorized (bad token, no `hello` in time, a request before `hello`).
    Unauthorized,
    /// 4008: slow consumer; reconnect and resume, nothing is lost.
    SlowConsumer,
    /// 4029: too many rate-limit violations.
    RateLimited,
    /// 1013 (extension): the server cannot serve the session now (the store was unreachable
    /// during `hello`); reconnect later.
    TryAgainLater,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::ShuttingDown => 1001,
            CloseCode::TooBig => 1009,
            CloseCode::Unauthorized => 4001,
            CloseCode::SlowConsumer => 4008,
            CloseCode::RateLimited => 4029,
            CloseCode::TryAgainLater => 1013,
        }
    }

    /// A short reason to put in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::ShuttingDown => "server shutting down",
            CloseCode::TooBig => "frame too large",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::RateLimited => "rate limited",
            CloseCode::TryAgainLater => "try again later",
        }
    }

    /// The close code with this number, if protocol v1 defines it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        Some(match code {
            1001 => CloseCode::ShuttingDown,
            1009 => CloseCode::TooBig,
            4001 => CloseCode::Unauthorized,
            4008 => CloseCode::SlowConsumer,
            4029 => CloseCode::RateLimited,
            1013 => CloseCode::TryAgainLater,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_wire_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::Unknown
        );
    }

    #[test]
    fn close_codes_round_trip() {
        for close in [
            CloseCode::ShuttingDown,
            CloseCode::TooBig,
            CloseCode::Unauthorized,
            CloseCode::SlowConsumer,
            CloseCode::RateLimited,
            CloseCode::TryAgainLater,
        ] {
            assert_eq!(CloseCode::from_code(close.code()), Some(close));
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }
}
