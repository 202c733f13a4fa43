//! Wall-clock timestamps in milliseconds since the Unix epoch, as protocol v1 carries them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (1970-01-01T00:00:00Z), set by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The current wall-clock time (0 if the system clock is before 1970).
    pub fn now() -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            .unwrap_or(Timestamp::EPOCH)
    }

    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where the engine reads the time.
///
/// [`Clock::system`] is the wall clock. [`Clock::tokio`] starts at the wall clock and then
/// follows tokio's clock, so a test that pauses and advances tokio time
/// (`tokio::time::pause`) moves timestamps, heartbeats and presence leases together.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    base: Option<(Timestamp, tokio::time::Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { base: None }
    }

    /// The wall clock at this call, advancing with tokio's clock from then on.
    pub fn tokio() -> Clock {
        Clock {
            base: Some((Timestamp::now(), tokio::time::Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match self.base {
            None => Timestamp::now(),
            Some((wall, instant)) => wall.saturating_add(instant.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_arithmetic_saturates() {
        assert!(Timestamp::now().as_millis() > 1_577_836_800_000);
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.saturating_add(Duration::from_secs(2)).as_millis(), 3_000);
        assert_eq!(
            Timestamp::from_millis(u64::MAX)
                .saturating_add(Duration::from_secs(1))
                .as_millis(),
            u64::MAX
        );
        assert_eq!(
            t.saturating_since(Timestamp::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(
            Timestamp::from_millis(400).saturating_since(t),
            Duration::ZERO
        );
    }
}
