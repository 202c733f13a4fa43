//! [`PresenceTracker`] clauses. Time is passed explicitly: each clause starts from the
//! current wall clock and moves forward by adding milliseconds.

use std::sync::Arc;
use std::time::Duration;

use crate::id::{ConnectionId, NodeId, UserId};
use crate::presence::{PresenceChange, PresenceInfo, PresenceStatus, PresenceTracker};
use crate::testkit::{unique, unique_user};
use crate::time::Timestamp;

type Tracker = Arc<dyn PresenceTracker>;

fn node(prefix: &str) -> NodeId {
    NodeId::new(&unique(prefix)).expect("a valid node id")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn status(tracker: &Tracker, user: &UserId, now: Timestamp) -> PresenceInfo {
    let mut all = tracker
        .status(std::slice::from_ref(user), now)
        .await
        .expect("status");
    assert_eq!(all.len(), 1, "one answer per user asked");
    let info = all.remove(0);
    assert_eq!(info.user, *user, "answers are for the users asked");
    info
}

async fn connect(
    tracker: &Tracker,
    n: &NodeId,
    c: u64,
    user: &UserId,
    now: Timestamp,
) -> PresenceChange {
    tracker
        .connect(n, ConnectionId(c), user, now)
        .await
        .expect("connect")
}

async fn disconnect(
    tracker: &Tracker,
    n: &NodeId,
    c: u64,
    user: &UserId,
    now: Timestamp,
) -> PresenceChange {
    tracker
        .disconnect(n, ConnectionId(c), user, now)
        .await
        .expect("disconnect")
}

/// Swept users among `watch` (a shared backend may also report other runs' users).
async fn swept(tracker: &Tracker, now: Timestamp, watch: &[&UserId]) -> Vec<PresenceInfo> {
    tracker
        .sweep(now)
        .await
        .expect("sweep")
        .into_iter()
        .filter(|info| watch.contains(&&info.user))
        .collect()
}

/// A user never seen is offline with no `last_seen`; answers come in the order asked.
pub async fn unknown_users_are_offline_and_never_seen(tracker: Tracker) {
    let users = [unique_user("ghost"), unique_user("phantom")];
    let now = Timestamp::now();
    let all = tracker.status(&users, now).await.expect("status");
    let expected: Vec<PresenceInfo> = users
        .iter()
        .map(|user| PresenceInfo {
            user: user.clone(),
            status: PresenceStatus::Offline,
            last_seen: None,
        })
        .collect();
    assert_eq!(all, expected);
    assert!(
        tracker
            .status(&[], now)
            .await
            .expect("status of nobody")
            .is_empty()
    );
}

/// Online from the first connection to the last close, across devices; only those two
/// calls report a change.
pub async fn online_while_any_connection_is_open(tracker: Tracker) {
    let user = unique_user("multi");
    let n = node("n");
    let t0 = Timestamp::now();
    assert_eq!(
        connect(&tracker, &n, 1, &user, t0).await,
        PresenceChange::Online
    );
    assert_eq!(
        connect(&tracker, &n, 2, &user, t0).await,
        PresenceChange::Unchanged,
        "a second device"
    );
    let online = status(&tracker, &user, t0.saturating_add(ms(5))).await;
    assert_eq!(online.status, PresenceStatus::Online);
    assert_eq!(
        online.last_seen,
        Some(t0.saturating_add(ms(5))),
        "an online user is seen now"
    );
    assert_eq!(
        disconnect(&tracker, &n, 1, &user, t0.saturating_add(ms(10))).await,
        PresenceChange::Unchanged,
        "one device left: still online"
    );
    assert_eq!(
        status(&tracker, &user, t0.saturating_add(ms(10)))
            .await
            .status,
        PresenceStatus::Online
    );
    let t_close = t0.saturating_add(ms(20));
    assert_eq!(
        disconnect(&tracker, &n, 2, &user, t_close).await,
        PresenceChange::Offline { last_seen: t_close },
        "the last device closed"
    );
    let offline = status(&tracker, &user, t0.saturating_add(ms(30))).await;
    assert_eq!(
        (offline.status, offline.last_seen),
        (PresenceStatus::Offline, Some(t_close))
    );
}

/// Registering a connection twice, or closing one never registered, changes nothing.
pub async fn repeated_connect_and_unknown_disconnect_change_nothing(tracker: Tracker) {
    let user = unique_user("repeat");
    let n = node("n");
    let t = Timestamp::now();
    assert_eq!(
        disconnect(&tracker, &n, 9, &user, t).await,
        PresenceChange::Unchanged
    );
    assert_eq!(
        status(&tracker, &user, t).await.last_seen,
        None,
        "an unknown close is not a sighting"
    );
    assert_eq!(
        connect(&tracker, &n, 1, &user, t).await,
        PresenceChange::Online
    );
    assert_eq!(
        connect(&tracker, &n, 1, &user, t).await,
        PresenceChange::Unchanged
    );
    assert_eq!(
        disconnect(&tracker, &n, 2, &user, t).await,
        PresenceChange::Unchanged
    );
    assert_eq!(
        status(&tracker, &user, t).await.status,
        PresenceStatus::Online
    );
    assert!(matches!(
        disconnect(&tracker, &n, 1, &user, t).await,
        PresenceChange::Offline { .. }
    ));
    assert_eq!(
        disconnect(&tracker, &n, 1, &user, t).await,
        PresenceChange::Unchanged,
        "closed twice"
    );
}

/// `last_seen` is the time of the last close, and moves with each session.
pub async fn last_seen_is_the_last_close(tracker: Tracker) {
    let user = unique_user("seen");
    let n = node("n");
    let t0 = Timestamp::now();
    connect(&tracker, &n, 1, &user, t0).await;
    disconnect(&tracker, &n, 1, &user, t0.saturating_add(ms(100))).await;
    connect(&tracker, &n, 2, &user, t0.saturating_add(ms(200))).await;
    let t_last = t0.saturating_add(ms(300));
    disconnect(&tracker, &n, 2, &user, t_last).await;
    let info = status(&tracker, &user, t0.saturating_add(ms(400))).await;
    assert_eq!(
        (info.status, info.last_seen),
        (PresenceStatus::Offline, Some(t_last))
    );
}

/// A node that stops renewing loses its lease after the TTL: its users are offline at once
/// (before any sweep), and the next sweep reports each of them once, last seen at the
/// node's last renewal.
pub async fn expired_lease_means_offline_and_is_swept_once(tracker: Tracker) {
    let ttl = tracker.lease_ttl();
    let (u1, u2) = (unique_user("dead1"), unique_user("dead2"));
    let n = node("dying");
    let t0 = Timestamp::now();
    connect(&tracker, &n, 1, &u1, t0).await;
    connect(&tracker, &n, 2, &u1, t0).await;
    connect(&tracker, &n, 3, &u2, t0).await;
    let t_renew = t0.saturating_add(ttl / 2);
    assert!(
        tracker.renew(&n, t_renew).await.expect("renew"),
        "a live lease renews"
    );
    let before = Timestamp::from_millis(t_renew.saturating_add(ttl).as_millis() - 1);
    assert_eq!(
        status(&tracker, &u1, before).await.status,
        PresenceStatus::Online,
        "within the TTL of the last renewal the user is online"
    );
    assert!(swept(&tracker, before, &[&u1, &u2]).await.is_empty());

    let after = t_renew.saturating_add(ttl).saturating_add(ms(1));
    for user in [&u1, &u2] {
        let info = status(&tracker, user, after).await;
        assert_eq!(
            info.status,
            PresenceStatus::Offline,
            "{user} must be offline once the lease ran out"
        );
        assert_eq!(
            info.last_seen,
            Some(t_renew),
            "last seen when the node last renewed"
        );
    }
    let mut reported = swept(&tracker, after, &[&u1, &u2]).await;
    reported.sort_by(|a, b| a.user.cmp(&b.user));
    let mut expected: Vec<PresenceInfo> = [&u1, &u2]
        .into_iter()
        .map(|user| PresenceInfo {
            user: user.clone(),
            status: PresenceStatus::Offline,
            last_seen: Some(t_renew),
        })
        .collect();
    expected.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(
        reported, expected,
        "each user of the dead node is reported once"
    );
    assert!(
        swept(&tracker, after.saturating_add(ms(10)), &[&u1, &u2])
            .await
            .is_empty(),
        "a second sweep reports nothing again"
    );
    assert_eq!(
        status(&tracker, &u1, after).await.status,
        PresenceStatus::Offline
    );
}

/// A node renewing within the TTL keeps its users online indefinitely.
pub async fn renewed_lease_stays_online(tracker: Tracker) {
    let ttl = tracker.lease_ttl();
    let user = unique_user("alive");
    let n = node("healthy");
    let mut now = Timestamp::now();
    connect(&tracker, &n, 1, &user, now).await;
    for _ in 0..10 {
        now = now.saturating_add(ttl / 2);
        assert!(tracker.renew(&n, now).await.expect("renew"));
        assert!(
            swept(&tracker, now, &[&user]).await.is_empty(),
            "nothing expires"
        );
        assert_eq!(
            status(&tracker, &user, now).await.status,
            PresenceStatus::Online
        );
    }
    assert!(
        matches!(
            disconnect(&tracker, &n, 1, &user, now).await,
            PresenceChange::Offline { .. }
        ),
        "the connection was still registered after many renewals"
    );
}

/// `renew` answers `false` for an expired or unknown lease and does not revive it; the
/// node's users come back only by connecting again.
pub async fn renew_does_not_revive_an_expired_lease(tracker: Tracker) {
    let ttl = tracker.lease_ttl();
    let user = unique_user("revive");
    let n = node("stalled");
    assert!(
        !tracker
            .renew(&node("unknown"), Timestamp::now())
            .await
            .expect("renew"),
        "no lease to renew"
    );
    let t0 = Timestamp::now();
    connect(&tracker, &n, 1, &user, t0).await;
    let late = t0.saturating_add(ttl).saturating_add(ms(1));
    assert!(
        !tracker.renew(&n, late).await.expect("renew"),
        "an expired lease cannot be renewed"
    );
    assert_eq!(
        status(&tracker, &user, late).await.status,
        PresenceStatus::Offline
    );
    let reported = swept(&tracker, late, &[&user]).await;
    assert_eq!(
        reported.len(),
        1,
        "the expiry is reported once: {reported:?}"
    );
    assert_eq!(
        connect(&tracker, &n, 1, &user, late).await,
        PresenceChange::Online,
        "connecting again revives"
    );
    assert_eq!(
        status(&tracker, &user, late).await.status,
        PresenceStatus::Online
    );
}

/// A user connected through two nodes stays online when one node's lease expires; nothing
/// is reported for it.
pub async fn users_on_another_live_node_stay_online(tracker: Tracker) {
    let ttl = tracker.lease_ttl();
    let user = unique_user("two-nodes");
    let (dead, alive) = (node("dead"), node("alive"));
    let t0 = Timestamp::now();
    assert_eq!(
        connect(&tracker, &dead, 1, &user, t0).await,
        PresenceChange::Online
    );
    assert_eq!(
        connect(&tracker, &alive, 1, &user, t0).await,
        PresenceChange::Unchanged
    );
    let mut now = t0;
    for _ in 0..3 {
        now = now.saturating_add(ttl / 2);
        assert!(tracker.renew(&alive, now).await.expect("renew"));
    }
    assert!(
        now > t0.saturating_add(ttl),
        "the dead node's lease has run out"
    );
    assert_eq!(
        status(&tracker, &user, now).await.status,
        PresenceStatus::Online
    );
    assert!(
        swept(&tracker, now, &[&user]).await.is_empty(),
        "still online elsewhere: no report"
    );
    assert!(matches!(
        disconnect(&tracker, &alive, 1, &user, now).await,
        PresenceChange::Offline { .. }
    ));
}

/// 16 devices of one user connecting at once report `Online` once; closing them all at
/// once reports `Offline` once.
pub async fn concurrent_connections_report_one_transition_each_way(tracker: Tracker) {
    const DEVICES: u64 = 16;
    let user = unique_user("crowd");
    let n = node("n");
    let now = Timestamp::now();
    let run = |connecting: bool| {
        let mut tasks = Vec::new();
        for c in 0..DEVICES {
            let (tracker, n, user) = (tracker.clone(), n.clone(), user.clone());
            tasks.push(tokio::spawn(async move {
                if connecting {
                    tracker.connect(&n, ConnectionId(c), &user, now).await
                } else {
                    tracker.disconnect(&n, ConnectionId(c), &user, now).await
                }
                .expect("connect/disconnect")
            }));
        }
        tasks
    };
    let mut changes = Vec::new();
    for task in run(true) {
        changes.push(task.await.expect("a connecting task panicked"));
    }
    let online = changes
        .iter()
        .filter(|c| **c == PresenceChange::Online)
        .count();
    assert_eq!(
        online, 1,
        "one Online for 16 concurrent connections: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .all(|c| !matches!(c, PresenceChange::Offline { .. }))
    );
    let mut changes = Vec::new();
    for task in run(false) {
        changes.push(task.await.expect("a disconnecting task panicked"));
    }
    let offline = changes
        .iter()
        .filter(|c| matches!(c, PresenceChange::Offline { .. }))
        .count();
    assert_eq!(
        offline, 1,
        "one Offline for 16 concurrent closes: {changes:?}"
    );
    assert_eq!(
        status(&tracker, &user, now).await.status,
        PresenceStatus::Offline
    );
}
