//! The engine's limits and timings, with the defaults protocol v1 names.

use std::time::Duration;

use crate::protocol::DecodeLimits;

/// Limits and timings of an [`Engine`](super::Engine). Start from `Default` and change what
/// you need:
///
/// ```
/// # use chat_core::engine::EngineConfig;
/// let mut config = EngineConfig::default();
/// config.heartbeat = std::time::Duration::from_secs(10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Largest `body` and `meta` (default 16,384 and 4,096 bytes): `too_large` beyond.
    pub decode: DecodeLimits,
    /// Largest WebSocket message (default 65,536 bytes): the transport closes with 1009
    /// beyond. The engine only reports it; transports enforce it while reading.
    pub max_frame_bytes: usize,
    /// `history` page size when the request gives no `limit` (default 50).
    pub history_default: usize,
    /// Largest `history` page (default 500; protocol v1 promises at least 500).
    pub history_cap: usize,
    /// Largest `history` reply in bytes (default 2 MiB): a page of large messages is cut
    /// short (with `more: true`) rather than sent whole.
    pub history_max_bytes: usize,
    /// Most rooms (direct rooms included) a user may be a member of (default 10,000): a
    /// `join` or `to` send beyond is `forbidden`.
    pub max_rooms_per_user: usize,
    /// Interval of WebSocket pings (default 25 s); a connection silent for two intervals
    /// is closed and its presence updated.
    pub heartbeat: Duration,
    /// How long a new connection may take to send `hello` (default 10 s): close 4001.
    pub hello_timeout: Duration,
    /// After the last `typing` `active: true`, how long until the others get
    /// `active: false` (default 10 s).
    pub typing_timeout: Duration,
    /// Rooms with more members than this are *large* (default 100): presence and receipt
    /// changes are not pushed into them.
    pub large_room: usize,
    /// Token bucket of frames per connection: burst (default 1,000) …
    pub rate_burst: u32,
    /// … and sustained rate (default 200 frames/s). Frames beyond get `rate_limited`.
    pub rate_per_sec: u32,
    /// Rate-limit violations tolerated in a burst (refilled at a tenth of this per second)
    /// before the connection is closed with 4029 (default 100).
    pub rate_violations: u32,
    /// Frames a connection's outbound queue holds (default 2,048) …
    pub outbox_frames: usize,
    /// … and bytes (default 4 MiB). A live push beyond either closes it with 4008.
    pub outbox_bytes: usize,
    /// Live messages buffered per room while a resume replays (default 1,024); beyond,
    /// the connection is closed with 4008 and resumes again.
    pub catchup_buffer: usize,
    /// Messages read from the store per replay page (default 256).
    pub replay_page: usize,
    /// Most connections this engine serves at once (default 100,000).
    pub max_connections: usize,
    /// How long a room waits for a missing `seq` before reading it from the store
    /// (default 200 ms).
    pub gap_wait: Duration,
    /// With a broker: how often each room with a local member compares its position with
    /// the store's latest seq (default 2 s), so that a message whose broker event was lost
    /// arrives even when no later message reveals the gap. The rooms are read one at a
    /// time, so a node never has more than one such read in flight (with many rooms a
    /// round simply takes longer). `Duration::ZERO` turns it off: a lost event is then
    /// repaired when a later message of the room reveals the gap.
    pub broker_probe: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            decode: DecodeLimits::default(),
            max_frame_bytes: 64 * 1024,
            history_default: 50,
            history_cap: 500,
            history_max_bytes: 2 * 1024 * 1024,
            max_rooms_per_user: 10_000,
            heartbeat: Duration::from_secs(25),
            hello_timeout: Duration::from_secs(10),
            typing_timeout: Duration::from_secs(10),
            large_room: 100,
            rate_burst: 1_000,
            rate_per_sec: 200,
            rate_violations: 100,
            outbox_frames: 2_048,
            outbox_bytes: 4 * 1024 * 1024,
            catchup_buffer: 1_024,
            replay_page: 256,
            max_connections: 100_000,
            gap_wait: Duration::from_millis(200),
            broker_probe: Duration::from_secs(2),
        }
    }
}
