//! Presence shared by nodes: each node has its own `RedisPresence` (its own connection) on
//! the same keys, and time is only ever the `now` passed in.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chat_core::presence::{PresenceChange, PresenceStatus};
use chat_core::testkit::{unique, unique_user};
use chat_core::{ConnectionId, NodeId, PresenceTracker, Timestamp};

use support::TempPresence;

const TTL: Duration = Duration::from_secs(30);

fn node(prefix: &str) -> NodeId {
    NodeId::new(&unique(prefix)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_go_offline_for_every_node_and_are_swept_once() {
    let Some(url) = support::url() else {
        return;
    };
    let one = TempPresence::new(&url, TTL).await;
    let two = TempPresence::with_prefix(&url, &one.prefix, TTL).await;
    let (n1, n2) = (node("n1"), node("n2"));
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let t0 = Timestamp::now();
    // alice on the node that will die; bob on both.
    assert_eq!(
        one.connect(&n1, ConnectionId(1), &alice, t0).await.unwrap(),
        PresenceChange::Online
    );
    one.connect(&n1, ConnectionId(2), &bob, t0).await.unwrap();
    assert_eq!(
        two.connect(&n2, ConnectionId(1), &bob, t0).await.unwrap(),
        PresenceChange::Unchanged,
        "bob is online already, through the other node"
    );
    let seen = two.status(&[alice.clone(), bob.clone()], t0).await.unwrap();
    assert!(seen.iter().all(|i| i.status == PresenceStatus::Online));

    // n1 stops renewing; n2 goes on.
    let mut now = t0;
    for _ in 0..3 {
        now = now.saturating_add(TTL / 2);
        assert!(two.renew(&n2, now).await.unwrap());
    }
    let status = two
        .status(&[alice.clone(), bob.clone()], now)
        .await
        .unwrap();
    assert_eq!(status[0].status, PresenceStatus::Offline);
    assert_eq!(
        status[0].last_seen,
        Some(t0),
        "last seen at n1's last renewal"
    );
    assert_eq!(status[1].status, PresenceStatus::Online);

    let swept = two.sweep(now).await.unwrap();
    assert_eq!(swept.len(), 1, "only alice went offline: {swept:?}");
    assert_eq!(swept[0].user, alice);
    assert!(one.sweep(now).await.unwrap().is_empty(), "reported once");
    assert!(
        !one.renew(&n1, now).await.unwrap(),
        "the dead node's lease is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_is_the_callers_not_the_servers() {
    let Some(url) = support::url() else {
        return;
    };
    let presence = TempPresence::new(&url, TTL).await;
    let n = node("n");
    let user = unique_user("u");
    // 2001 and 2100: a tracker reading the server's clock would find the first lease long
    // expired and the second far from it.
    for t0 in [
        Timestamp::from_millis(1_000_000_000_000),
        Timestamp::from_millis(4_102_444_800_000),
    ] {
        presence
            .connect(&n, ConnectionId(1), &user, t0)
            .await
            .unwrap();
        let later = t0.saturating_add(TTL - Duration::from_millis(1));
        let info = presence
            .status(std::slice::from_ref(&user), later)
            .await
            .unwrap();
        assert_eq!(info[0].status, PresenceStatus::Online, "at {t0:?}");
        let expired = t0.saturating_add(TTL);
        let info = presence
            .status(std::slice::from_ref(&user), expired)
            .await
            .unwrap();
        assert_eq!(info[0].status, PresenceStatus::Offline, "at {t0:?}");
        let swept = presence.sweep(expired).await.unwrap();
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert_eq!(swept[0].last_seen, Some(t0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix_and_a_clean_close_leaves_no_lease() {
    let Some(url) = support::url() else {
        return;
    };
    let presence = TempPresence::new(&url, TTL).await;
    let pattern = presence.key_pattern();
    assert!(
        presence
            .presence
            .key_prefix()
            .starts_with(&format!("{{{}}}", presence.prefix)),
        "the prefix is a hash tag: {}",
        presence.presence.key_prefix()
    );
    let n = node("n");
    let user = unique_user("u");
    let t = Timestamp::now();
    presence
        .connect(&n, ConnectionId(7), &user, t)
        .await
        .unwrap();
    assert!(support::count_keys(&url, &pattern) > 0);
    presence
        .disconnect(&n, ConnectionId(7), &user, t)
        .await
        .unwrap();
    assert!(
        !presence.renew(&n, t).await.unwrap(),
        "a node without connections holds no lease"
    );
    // What stays: the user's last-seen time, and nothing of the node.
    assert_eq!(
        support::count_keys(&url, &pattern),
        1,
        "only the last-seen hash remains"
    );
    let prefix = presence.presence.key_prefix().to_owned();
    drop(presence);
    assert_eq!(support::count_keys(&url, &format!("{prefix}:*")), 0);
}
