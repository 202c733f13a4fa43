//! Crash consistency on PostgreSQL: the demo server on `--postgres` is killed with
//! `SIGKILL` at a random moment of each burst of sends, 25 times, and restarted on the same
//! database. Every acked message must be there at the seq its ack gave, each room's log
//! gapless, no cid stored twice, and every restart ready within 2 s.
//!
//! Runs against `CHAT_TEST_POSTGRES_URL` in a fresh schema (dropped after); skipped with a
//! reason when the variable is not set. `CRASH_KILLS` changes the number of kills,
//! `CRASH_SEED` replays a run.

mod support;

#[path = "../../chat-store-sqlite/tests/support/server.rs"]
mod server;

#[path = "../../chat-store-sqlite/tests/support/crash.rs"]
mod crash;

use crash::Plan;
use support::SchemaGuard;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bursts_loses_no_acked_message() {
    let Some(url) = support::url() else {
        return;
    };
    let Some(binary) = server::server_binary() else {
        return;
    };
    let schema = SchemaGuard::create(&url).await;
    let args = vec!["--postgres".to_owned(), schema.url_with_search_path()];
    let plan = Plan::default();
    let report = crash::run(&binary, &args, plan.clone()).await;
    crash::check("postgres crash", &report, &plan);
}
