//! The parts of a session (reader, writer, heartbeat, catch-up) as one stream of the parts
//! that end, polled together.
//!
//! The writer is polled on every wake-up of the session's task. The other parts share a
//! waker of their own, and are polled only when it fired since their last poll: a frame
//! queued for the connection, the wake-up of most connections most of the time, does not
//! poll the reader's socket, the heartbeat's timer and its wait for a close. That costs one
//! small allocation per session (the shared waker), not one per part (a
//! `FuturesUnordered` spends about 400 bytes per connection on its per-part nodes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream;
use futures_util::task::AtomicWaker;

use super::session::Part;

type PartFuture<'a> = Pin<Box<dyn Future<Output = Part> + Send + 'a>>;

/// At most four parts; each yields its [`Part`] once, when it ends.
pub(super) struct Parts<'a> {
    running: [Option<PartFuture<'a>>; 4],
    /// The waker of the parts not polled on every wake-up. (What else `Parts` needs lives
    /// there too: the session's future, in every connection's task, stays as it was.)
    others: Arc<Others>,
}

/// The waker the parts polled only when woken share: it notes that one of them was woken,
/// and wakes the task.
struct Others {
    woken: AtomicBool,
    /// Bit `i`: slot `i` is polled on every wake-up, with the task's own waker. Changed
    /// only through `&mut Parts`.
    every_wake: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Others {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted before the task is woken: its next poll sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a> Parts<'a> {
    pub(super) fn new() -> Self {
        Parts {
            running: [None, None, None, None],
            others: Arc::new(Others {
                // The first poll polls every part.
                woken: AtomicBool::new(true),
                every_wake: AtomicU8::new(0),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// Adds a part polled only when something it waits for wakes it. Panics beyond four: a
    /// session has four.
    pub(super) fn push(&mut self, part: PartFuture<'a>) {
        self.slot().1.replace(part);
    }

    /// Adds a part polled on every wake-up of the task (the writer: the parts' work ends in
    /// what it writes).
    pub(super) fn push_every_wake(&mut self, part: PartFuture<'a>) {
        let (i, slot) = self.slot();
        *slot = Some(part);
        self.others.every_wake.fetch_or(1 << i, Ordering::Relaxed);
    }

    fn slot(&mut self) -> (usize, &mut Option<PartFuture<'a>>) {
        self.running
            .iter_mut()
            .enumerate()
            .find(|(_, slot)| slot.is_none())
            .expect("a session has at most four parts")
    }
}

impl Stream for Parts<'_> {
    type Item = Part;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Part>> {
        let this = self.get_mut();
        this.others.task.register(cx.waker());
        // Taken before the parts are polled: a wake-up during their poll is noted again.
        let others_woken = this.others.woken.swap(false, Ordering::AcqRel);
        let others_waker = others_woken.then(|| Waker::from(this.others.clone()));
        let every_wake = this.others.every_wake.load(Ordering::Relaxed);
        let mut any = false;
        for (i, slot) in this.running.iter_mut().enumerate() {
            let Some(future) = slot else { continue };
            any = true;
            let polled = if every_wake & (1 << i) != 0 {
                future.as_mut().poll(cx)
            } else if let Some(waker) = &others_waker {
                future.as_mut().poll(&mut Context::from_waker(waker))
            } else {
                continue;
            };
            if let Poll::Ready(part) = polled {
                *slot = None;
                this.others
                    .every_wake
                    .fetch_and(!(1 << i), Ordering::Relaxed);
                if others_woken {
                    // The parts after this one were not polled: the next poll does it.
                    this.others.woken.store(true, Ordering::Release);
                }
                return Poll::Ready(Some(part));
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
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn parts_end_in_the_order_they_finish_and_then_the_stream_ends() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut parts = Parts::new();
        parts.push_every_wake(Box::pin(async {
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

    /// A part that counts its polls and ends after `ends` notifications of `notify`.
    fn counted<'a>(
        polls: &'a AtomicUsize,
        notify: &'a tokio::sync::Notify,
        ends: usize,
        part: Part,
    ) -> PartFuture<'a> {
        let mut inner = Box::pin(async move {
            for _ in 0..ends {
                notify.notified().await;
            }
            part
        });
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            inner.as_mut().poll(cx)
        }))
    }

    /// One poll, with a waker that does nothing (the tests poll by hand).
    fn poll_once(parts: &mut Parts<'_>) -> Poll<Option<Part>> {
        let waker = futures_util::task::noop_waker();
        Pin::new(parts).poll_next(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_wake_up_for_the_writer_polls_only_the_writer() {
        let (writer_polls, other_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (to_writer, to_other) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let mut parts = Parts::new();
        parts.push(counted(&other_polls, &to_other, 2, Part::Reader));
        parts.push_every_wake(counted(&writer_polls, &to_writer, 3, Part::Writer));
        let mut poll = || poll_once(&mut parts);
        let counts = || {
            (
                writer_polls.load(Ordering::Relaxed),
                other_polls.load(Ordering::Relaxed),
            )
        };
        assert!(poll().is_pending());
        assert_eq!(counts(), (1, 1), "the first poll polls every part");
        to_writer.notify_one();
        assert!(poll().is_pending());
        to_writer.notify_one();
        assert!(poll().is_pending());
        assert_eq!(counts(), (3, 1), "the other part was not woken: not polled");
        to_other.notify_one();
        assert!(poll().is_pending());
        assert_eq!(
            counts(),
            (4, 2),
            "woken, it is polled; the writer on every poll"
        );
        to_other.notify_one();
        assert_eq!(poll(), Poll::Ready(Some(Part::Reader)));
        to_writer.notify_one();
        assert_eq!(poll(), Poll::Ready(Some(Part::Writer)));
        assert_eq!(poll(), Poll::Ready(None));
    }

    #[test]
    fn parts_left_unpolled_after_one_ends_are_polled_next_time() {
        let (first_polls, second_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let notify = tokio::sync::Notify::new();
        let mut parts = Parts::new();
        parts.push(counted(&first_polls, &notify, 1, Part::CaughtUp));
        parts.push(counted(&second_polls, &notify, 2, Part::Reader));
        let mut poll = || poll_once(&mut parts);
        assert!(poll().is_pending());
        // Both wait on the same `Notify`: one wake-up for both.
        notify.notify_waiters();
        assert_eq!(poll(), Poll::Ready(Some(Part::CaughtUp)));
        assert_eq!(second_polls.load(Ordering::Relaxed), 1);
        // Nothing woke anything since, yet the second part is polled: it was woken before.
        assert!(poll().is_pending());
        assert_eq!(second_polls.load(Ordering::Relaxed), 2);
    }
}
