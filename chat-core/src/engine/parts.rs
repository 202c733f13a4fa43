//! The parts of a session (reader, writer, heartbeat, catch-up) as one stream of the parts
//! that end, polled together.
//!
//! Every wake-up polls every part still running. With a cheap reader and heartbeat poll
//! that costs about what a `FuturesUnordered` spends on its per-part wakers, without its
//! per-part allocations (about 400 bytes per connection).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::session::Part;

type PartFuture<'a> = Pin<Box<dyn Future<Output = Part> + Send + 'a>>;

/// At most four parts; each yields its [`Part`] once, when it ends.
pub(super) struct Parts<'a> {
    running: [Option<PartFuture<'a>>; 4],
}

impl<'a> Parts<'a> {
    pub(super) fn new() -> Self {
        Parts {
            running: [None, None, None, None],
        }
    }

    /// Adds a part. Panics beyond four: a session has four.
    pub(super) fn push(&mut self, part: PartFuture<'a>) {
        let free = self
            .running
            .iter_mut()
            .find(|slot| slot.is_none())
            .expect("a session has at most four parts");
        *free = Some(part);
    }
}

impl Stream for Parts<'_> {
    type Item = Part;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Part>> {
        let this = self.get_mut();
        let mut any = false;
        for slot in &mut this.running {
            if let Some(future) = slot {
                any = true;
                if let Poll::Ready(part) = future.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready(Some(part));
                }
            }
        }
        if any {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn parts_end_in_the_order_they_finish_and_then_the_stream_ends() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut parts = Parts::new();
        parts.push(Box::pin(async {
            let _ = rx.await;
            Part::Writer
        }));
        parts.push(Box::pin(async { Part::CaughtUp }));
        parts.push(Box::pin(async {
            tokio::task::yield_now().await;
            Part::Reader
        }));
        assert_eq!(parts.next().await, Some(Part::CaughtUp));
        assert_eq!(parts.next().await, Some(Part::Reader));
        tx.send(()).unwrap();
        assert_eq!(parts.next().await, Some(Part::Writer));
        assert_eq!(parts.next().await, None);
    }
}
