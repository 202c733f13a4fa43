//! A token bucket on tokio's clock (so paused-time tests control it).

use tokio::time::Instant;

/// Holds up to `burst` tokens, refilled at `per_sec`; each frame takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(burst: u32, per_sec: u32) -> TokenBucket {
        TokenBucket {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills() {
        let mut bucket = TokenBucket::new(3, 2);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take(), "the burst is spent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.take(), "half a second refills one token at 2/s");
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take(), "never more than the burst");
    }
}
