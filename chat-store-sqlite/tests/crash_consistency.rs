//! Crash consistency on SQLite: the demo server on `--db` is killed with `SIGKILL` at a
//! random moment of each burst of sends, 25 times, and restarted on the same file. Every
//! acked message must be there at the seq its ack gave, each room's log gapless, no cid
//! stored twice, and every restart ready within 2 s.
//!
//! `CRASH_KILLS` changes the number of kills, `CRASH_SEED` replays a run.

mod support;

#[path = "support/server.rs"]
mod server;

#[path = "support/crash.rs"]
mod crash;

use crash::Plan;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bursts_loses_no_acked_message() {
    let Some(binary) = server::server_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("chat.db");
    let args = vec!["--db".to_owned(), db.display().to_string()];
    let plan = Plan::default();
    let report = crash::run(&binary, &args, plan.clone()).await;
    crash::check("sqlite crash", &report, &plan);
}
