//! Presence after its connection to Redis broke: calls fail while Redis is unreachable
//! (through a TCP proxy the test cuts; the shared Redis is never restarted), and the first
//! call after it is back succeeds on a new connection.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use chat_core::presence::{PresenceChange, PresenceStatus};
use chat_core::testkit::{unique, unique_user};
use chat_core::{ConnectionId, NodeId, PresenceTracker, Timestamp};

use support::{Proxy, TempPresence};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_while_cut_off_and_work_again_after() {
    let Some(url) = support::url() else {
        return;
    };
    let proxy = Proxy::start(&url).await;
    let presence = TempPresence::new(proxy.url(), Duration::from_secs(30)).await;
    let n = NodeId::new(&unique("n")).unwrap();
    let user = unique_user("u");
    let t = Timestamp::now();
    assert_eq!(
        presence
            .connect(&n, ConnectionId(1), &user, t)
            .await
            .unwrap(),
        PresenceChange::Online
    );

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        assert!(
            presence
                .status(std::slice::from_ref(&user), t)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the command timeout"
        );
    }

    proxy.restore();
    let info = presence
        .status(std::slice::from_ref(&user), t)
        .await
        .expect("the first call after the outage succeeds");
    assert_eq!(info[0].status, PresenceStatus::Online, "nothing was lost");
}
