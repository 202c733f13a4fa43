//! The writer thread: the only connection that writes, committing whatever is queued in
//! one transaction (group commit).
//!
//! Each write is a [`Job`]: it runs inside the batch's transaction and sees the writes of
//! the jobs before it, so idempotency and the sequencer need no other lock. Its caller hears
//! back only after the commit. When a batch fails in the database (a full disk, an I/O
//! error), it is rolled back and each job is retried in a transaction of its own, so one bad
//! write never fails the others.

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use chat_core::{Error, Result};

use crate::backend;

/// A database error (`Err`, which fails the batch) or the job's own answer (`Ok`, which may
/// be a refusal such as `RoomNotFound`).
pub(crate) type Outcome<T> = rusqlite::Result<Result<T>>;

/// One write waiting for the writer.
pub(crate) trait Job: Send {
    /// Runs inside the batch's transaction; may run again (in a new transaction) when the
    /// batch is rolled back.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Sends the answer of the last `run` (after the commit).
    fn reply(self: Box<Self>);
    /// Sends `error` instead.
    fn fail(self: Box<Self>, error: Error);
}

/// A [`Job`] made of a closure and the channel its answer goes to.
pub(crate) struct Task<T, F> {
    work: F,
    answer: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Task<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Outcome<T> + Send + 'static,
{
    pub(crate) fn boxed(work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T>>) {
        let (reply, answer) = oneshot::channel();
        let task = Task {
            work,
            answer: None,
            reply,
        };
        (Box::new(task), answer)
    }
}

impl<T, F> Job for Task<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Outcome<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.answer = Some((self.work)(conn)?);
        Ok(())
    }

    fn reply(self: Box<Self>) {
        let answer = self
            .answer
            .unwrap_or_else(|| Err(Error::Internal("a write job was not run".to_owned())));
        // The caller may have gone (a cancelled future): the write stands all the same.
        let _ = self.reply.send(answer);
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// Runs the writer until every sender is gone, then closes the connection.
pub(crate) fn run(mut conn: Connection, mut jobs: mpsc::Receiver<Box<dyn Job>>, max_batch: usize) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&mut conn, &mut batch) {
            Ok(()) => batch.drain(..).for_each(|job| job.reply()),
            Err(e) if batch.len() == 1 => {
                tracing::warn!(error = %e, "sqlite write failed");
                batch
                    .drain(..)
                    .for_each(|job| job.fail(backend(e.to_string())));
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "sqlite batch failed; retrying each write alone");
                for mut job in batch.drain(..) {
                    match commit(&mut conn, std::slice::from_mut(&mut job)) {
                        Ok(()) => job.reply(),
                        Err(e) => job.fail(backend(e.to_string())),
                    }
                }
            }
        }
    }
    tracing::debug!("sqlite writer stopped");
}

/// Runs `batch` in one transaction and commits it; on any error the transaction is rolled
/// back.
fn commit(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in batch.iter_mut() {
            job.run(&tx)?;
        }
        tx.commit()
    })();
    if result.is_err() && !conn.is_autocommit() {
        // A failed COMMIT can leave the transaction open.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}
