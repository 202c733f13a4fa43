//! A connection's bounded queue of pre-encoded frames, drained by its writer in batches.

use std::collections::VecDeque;
use std::pin::pin;
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::{CloseCode, Encoded};

/// What the writer sends next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A text frame.
    Frame(Encoded),
    /// A WebSocket ping (heartbeat).
    Ping,
    /// A close frame with this code; nothing follows it.
    Close(CloseCode),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is closing or closed.
    Closed,
    /// The queue was full: the connection is now closing with 4008.
    Overflow,
}

/// Limits of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxLimits {
    pub(crate) max_frames: usize,
    pub(crate) max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    bytes: usize,
    close: Option<CloseCode>,
    /// The writer has taken the close: the connection is gone.
    finished: bool,
    /// Paced pushers waiting for room (the writer wakes them only when there are some).
    paced: usize,
}

/// The outbound queue. Live pushes never wait: a full queue closes the connection with 4008
/// (the client resumes and loses nothing) rather than skipping a frame or blocking the
/// sender. Replays wait for room instead ([`Outbox::push_paced`]).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer's waker, woken when frames or a close are waiting. There is one writer;
    /// it registers before it looks at the queue, so a push after the look wakes it.
    writer: AtomicWaker,
    /// Wakes paced pushers: the writer drained the queue, or the connection closed.
    space: Notify,
    limits: OutboxLimits,
}

impl Outbox {
    pub(crate) fn new(limits: OutboxLimits) -> Outbox {
        Outbox {
            state: Mutex::default(),
            writer: AtomicWaker::new(),
            space: Notify::new(),
            limits,
        }
    }

    /// Queues a frame at once, or refuses it; a full queue closes the connection (4008).
    pub(crate) fn push(&self, frame: Encoded) -> Result<(), Refused> {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Err(Refused::Closed);
        }
        // One frame larger than the byte limit still goes through an empty queue (a big
        // reply); anything else beyond a limit is an overflow.
        if state.queue.len() >= self.limits.max_frames
            || (!state.queue.is_empty() && state.bytes + frame.len() > self.limits.max_bytes)
        {
            Self::close_locked(&mut state, CloseCode::SlowConsumer);
            drop(state);
            self.wake_all();
            return Err(Refused::Overflow);
        }
        state.bytes += frame.len();
        let was_empty = state.queue.is_empty();
        state.queue.push_back(Outbound::Frame(frame));
        drop(state);
        // The writer waits only on an empty queue: a frame joining others needs no wake-up
        // (the writer looks at the queue again after each batch).
        if was_empty {
            self.writer.wake();
        }
        Ok(())
    }

    /// Puts a frame at the head of the queue, before anything queued (the `hello` reply,
    /// which pushes may have raced). Not counted against the limits.
    pub(crate) fn push_front(&self, frame: Encoded) {
        let mut state = self.state.lock();
        // Also while a graceful close is pending: the reply goes out before the close.
        if !state.finished && state.close != Some(CloseCode::SlowConsumer) {
            state.bytes += frame.len();
            state.queue.push_front(Outbound::Frame(frame));
            drop(state);
            self.writer.wake();
        }
    }

    /// Queues a frame once the queue is at most half full, so that a replay or a reply
    /// leaves room for live frames. Cancel safe: a dropped call queued nothing.
    pub(crate) async fn push_paced(&self, frame: Encoded) -> Result<(), Refused> {
        self.wait_for_room(frame.len()).await?;
        self.push(frame)
    }

    /// Waits until the queue is at most half full (in frames, and in bytes with `len` more),
    /// or empty. Cancel safe.
    pub(crate) async fn wait_for_room(&self, len: usize) -> Result<(), Refused> {
        loop {
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            {
                let mut state = self.state.lock();
                if state.close.is_some() {
                    return Err(Refused::Closed);
                }
                let half_frames = state.queue.len() < self.limits.max_frames / 2;
                let half_bytes = state.bytes + len <= self.limits.max_bytes / 2;
                if state.queue.is_empty() || (half_frames && half_bytes) {
                    return Ok(());
                }
                // Counted under the same lock as the check: the writer's next drain sees it.
                state.paced += 1;
            }
            let _counted = PacedWaiter(self);
            space.await;
        }
    }

    /// Queues a heartbeat ping (tiny; not counted against the limits).
    pub(crate) fn ping(&self) {
        let mut state = self.state.lock();
        if state.close.is_none() {
            state.queue.push_back(Outbound::Ping);
            drop(state);
            self.writer.wake();
        }
    }

    /// Closes the connection with `code`: frames already queued are still sent first,
    /// except for a slow consumer (4008), whose queue is dropped. The first close wins.
    pub(crate) fn close(&self, code: CloseCode) {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return;
        }
        Self::close_locked(&mut state, code);
        drop(state);
        self.wake_all();
    }

    fn close_locked(state: &mut State, code: CloseCode) {
        state.close = Some(code);
        if code == CloseCode::SlowConsumer {
            state.queue.clear();
            state.bytes = 0;
        }
    }

    fn wake_all(&self) {
        self.writer.wake();
        self.space.notify_waiters();
    }

    /// Waits until the connection is closing. Cancel safe.
    pub(crate) async fn wait_closing(&self) {
        loop {
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            if self.state.lock().close.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// The close code, once closing.
    pub(crate) fn closing(&self) -> Option<CloseCode> {
        self.state.lock().close
    }

    /// Marks the connection gone without a close frame (the peer vanished).
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock();
        state.close.get_or_insert(CloseCode::ShuttingDown);
        state.finished = true;
        state.queue.clear();
        state.bytes = 0;
        drop(state);
        self.wake_all();
    }

    /// The largest batch (frames, bytes) to queue at once after [`Outbox::wait_for_room`]:
    /// a quarter of the queue, so that it fits beside what half a queue may still hold.
    pub(crate) fn chunk_limits(&self) -> (usize, usize) {
        (
            (self.limits.max_frames / 4).max(1),
            (self.limits.max_bytes / 4).max(1),
        )
    }

    /// Waits for work and moves every queued item into `batch`. Ends with a
    /// [`Outbound::Close`] once the queue is empty and the connection is closing; returns
    /// `false` when there is nothing more to write, ever.
    ///
    /// Cancel safe: items are only taken by a call that returns.
    pub(crate) async fn next_batch(&self, batch: &mut Vec<Outbound>) -> bool {
        std::future::poll_fn(|cx| self.poll_batch(cx.waker(), batch)).await
    }

    fn poll_batch(&self, waker: &Waker, batch: &mut Vec<Outbound>) -> Poll<bool> {
        // Before the queue is looked at: a push after the look wakes this poll's waker.
        self.writer.register(waker);
        let mut state = self.state.lock();
        if state.finished {
            return Poll::Ready(false);
        }
        if !state.queue.is_empty() {
            if batch.capacity() == 0 {
                *batch = spare::take_batch();
            }
            batch.extend(state.queue.drain(..));
            state.bytes = 0;
            let paced = state.paced > 0;
            drop(state);
            if paced {
                self.space.notify_waiters();
            }
            return Poll::Ready(true);
        }
        if let Some(code) = state.close {
            state.finished = true;
            batch.push(Outbound::Close(code));
            return Poll::Ready(true);
        }
        // Going idle: an idle connection keeps no queue memory (a burst's buffers would
        // otherwise stay with every connection that ever had one).
        if state.queue.capacity() > 0 {
            state.queue = VecDeque::new();
        }
        drop(state);
        if batch.capacity() > 0 {
            spare::give_batch(std::mem::take(batch));
        }
        Poll::Pending
    }
}

/// One spare batch per thread: a writer going idle leaves its batch's buffer here rather
/// than with the allocator, and the next writer woken on this thread takes it (a writer
/// takes and leaves it within one poll). At most a few KiB per thread; nothing per
/// connection.
mod spare {
    use std::cell::Cell;

    use super::Outbound;

    /// Buffers with room for more frames than this go back to the allocator.
    const MAX_FRAMES: usize = 64;

    thread_local! {
        static BATCH: Cell<Vec<Outbound>> = const { Cell::new(Vec::new()) };
    }

    pub(super) fn take_batch() -> Vec<Outbound> {
        BATCH.take()
    }

    /// Keeps an emptied batch's buffer (the larger of it and the one kept).
    pub(super) fn give_batch(mut batch: Vec<Outbound>) {
        batch.clear();
        if batch.capacity() <= MAX_FRAMES {
            BATCH.with(|kept| {
                let old = kept.take();
                kept.set(if old.capacity() >= batch.capacity() {
                    old
                } else {
                    batch
                });
            });
        }
    }
}

/// Uncounts a paced pusher when its wait ends (or is dropped).
struct PacedWaiter<'a>(&'a Outbox);

impl Drop for PacedWaiter<'_> {
    fn drop(&mut self) {
        self.0.state.lock().paced -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ReplyBody, ServerFrame};

    fn frame() -> Encoded {
        ServerFrame::ok(None, ReplyBody::Empty).encode()
    }

    fn outbox(max_frames: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_frames,
            max_bytes: 1 << 20,
        })
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn overflow_closes_with_4008_and_drops_the_queue() {
        block_on(async {
            let out = outbox(2);
            assert_eq!(out.push(frame()), Ok(()));
            assert_eq!(out.push(frame()), Ok(()));
            assert_eq!(out.push(frame()), Err(Refused::Overflow));
            assert_eq!(out.push(frame()), Err(Refused::Closed));
            let mut batch = Vec::new();
            assert!(out.next_batch(&mut batch).await);
            assert_eq!(batch, [Outbound::Close(CloseCode::SlowConsumer)]);
            batch.clear();
            assert!(!out.next_batch(&mut batch).await);
        });
    }

    #[test]
    fn other_closes_send_what_is_queued_first() {
        block_on(async {
            let out = outbox(8);
            out.push(frame()).unwrap();
            out.close(CloseCode::Unauthorized);
            out.close(CloseCode::ShuttingDown);
            let mut batch = Vec::new();
            out.next_batch(&mut batch).await;
            assert_eq!(batch, [Outbound::Frame(frame())]);
            batch.clear();
            out.next_batch(&mut batch).await;
            assert_eq!(
                batch,
                [Outbound::Close(CloseCode::Unauthorized)],
                "the first close wins"
            );
        });
    }

    #[test]
    fn paced_pushes_wait_for_the_writer() {
        block_on(async {
            let out = std::sync::Arc::new(outbox(4));
            out.push_paced(frame()).await.unwrap();
            out.push_paced(frame()).await.unwrap();
            let pacer = {
                let out = out.clone();
                tokio::spawn(async move { out.push_paced(frame()).await })
            };
            tokio::task::yield_now().await;
            assert!(!pacer.is_finished(), "half full: the replay waits");
            let mut batch = Vec::new();
            out.next_batch(&mut batch).await;
            assert_eq!(batch.len(), 2);
            assert_eq!(pacer.await.unwrap(), Ok(()));
            // Live pushes may still use the other half.
            out.push(frame()).unwrap();
            out.push(frame()).unwrap();
            out.push(frame()).unwrap();
        });
    }

    #[test]
    fn a_close_releases_paced_pushers() {
        block_on(async {
            let out = std::sync::Arc::new(outbox(2));
            out.push(frame()).unwrap();
            let pacer = {
                let out = out.clone();
                tokio::spawn(async move { out.push_paced(frame()).await })
            };
            tokio::task::yield_now().await;
            out.close(CloseCode::ShuttingDown);
            assert_eq!(pacer.await.unwrap(), Err(Refused::Closed));
        });
    }
}
