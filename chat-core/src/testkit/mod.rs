//! The conformance suite every backend runs: one async test function per contract clause
//! of [`MessageStore`](crate::MessageStore), [`DeliveryTracker`](crate::DeliveryTracker),
//! [`PresenceTracker`](crate::PresenceTracker) and [`Broker`](crate::Broker).
//!
//! A backend proves itself by running the whole suite from its own tests, one macro call
//! per trait it implements; each clause becomes one `#[test]`:
//!
//! ```
//! # mod demo {
//! use std::sync::Arc;
//! use chat_core::broker::LocalBus;
//!
//! chat_core::broker_suite!({
//!     let bus = LocalBus::new();
//!     move |node| {
//!         let broker = bus.broker(node);
//!         async move { Arc::new(broker) }
//!     }
//! });
//! # }
//! ```
//!
//! and likewise [`message_store_suite!`](crate::message_store_suite),
//! [`delivery_tracker_suite!`](crate::delivery_tracker_suite) and
//! [`presence_tracker_suite!`](crate::presence_tracker_suite). The functions are public
//! too, for a backend that needs its own setup around a clause.
//!
//! Every clause names its rooms and users with a random suffix, so the suite can run
//! against a shared database that other runs (or other clauses, in parallel) use too.
//! Presence clauses pass time explicitly (see [`PresenceTracker`](crate::PresenceTracker)),
//! so lease expiry is tested without sleeping and without a paused clock — which a
//! network backend could not follow.
//!
//! A failing clause panics with a message that says which rule broke.

use std::future::Future;
use std::time::Duration;

use crate::id::{RoomId, UserId, random_u64};

pub mod broker;
pub mod delivery;
mod guarded;
pub mod presence;
pub mod store;

pub use guarded::Guarded;

/// How long one clause may run before it counts as hung.
pub const CLAUSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one clause on a fresh multi-threaded runtime (4 workers, so concurrency clauses
/// really race), failing it if it runs longer than [`CLAUSE_TIMEOUT`].
pub fn run<F: Future>(clause: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime for the testkit");
    runtime.block_on(async {
        tokio::time::timeout(CLAUSE_TIMEOUT, clause)
            .await
            .expect("the clause did not finish within CLAUSE_TIMEOUT: a deadlock or a hang")
    })
}

/// `prefix` plus a random suffix: a name no other run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", random_u64() & 0xffff_ffff_ffff)
}

/// A fresh room id.
pub fn unique_room(prefix: &str) -> RoomId {
    RoomId::new(&unique(prefix)).expect("a valid room id")
}

/// A fresh user id.
pub fn unique_user(prefix: &str) -> UserId {
    UserId::new(&unique(prefix)).expect("a valid user id")
}

/// Generates one `#[test]` per listed clause of a testkit module; used by the suite macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __testkit_clauses {
    ($module:ident, $make:expr, $setup:ident => $call:expr, [$($clause:ident),* $(,)?]) => {
        $(
            #[test]
            fn $clause() {
                $crate::testkit::run(async {
                    let $setup = $make;
                    #[allow(unused_imports)]
                    use $crate::testkit::$module::$clause as clause;
                    $call
                })
            }
        )*
    };
}

/// Runs every [`MessageStore`](crate::MessageStore) clause against the store that `$make`
/// (an async expression) builds: one `#[test]` each. Put the call in a module of its own.
///
/// ```ignore
/// chat_core::message_store_suite!(async { std::sync::Arc::new(MyStore::connect().await) });
/// ```
#[macro_export]
macro_rules! message_store_suite {
    ($make:expr) => {
        $crate::__testkit_clauses!(store, $make, make => {
            let store: ::std::sync::Arc<dyn $crate::MessageStore> = make.await;
            clause(store).await
        }, [
            ensure_room_creates_once,
            missing_room_is_reported_and_not_created,
            append_assigns_gapless_seqs_from_one,
            append_is_idempotent_per_room_sender_and_cid,
            concurrent_appends_are_gapless,
            concurrent_retries_store_once,
            rooms_sequence_independently,
            history_latest_page,
            history_pages_backwards_with_before,
            history_pages_forwards_with_after,
            history_of_an_empty_room,
            messages_are_kept_exactly,
            membership_is_a_set,
            concurrent_membership_changes_converge,
            rooms_of_lists_memberships_with_latest_seq,
        ]);
    };
}

/// Runs every [`DeliveryTracker`](crate::DeliveryTracker) clause. `$make` is an async
/// expression giving `(store, tracker)` of one backend (often the same value twice).
#[macro_export]
macro_rules! delivery_tracker_suite {
    ($make:expr) => {
        $crate::__testkit_clauses!(delivery, $make, make => {
            let (store, tracker) = make.await;
            let store: ::std::sync::Arc<dyn $crate::MessageStore> = store;
            let tracker: ::std::sync::Arc<dyn $crate::DeliveryTracker> = tracker;
            clause(store, tracker).await
        }, [
            cursors_start_at_zero_for_members,
            cursors_only_move_forward,
            cursors_are_clamped_to_latest_seq,
            read_raises_delivered,
            non_members_have_no_cursors,
            leaving_drops_cursors,
            room_and_user_cursor_listings,
            concurrent_advances_keep_the_highest,
        ]);
    };
}

/// Runs every [`PresenceTracker`](crate::PresenceTracker) clause against the tracker that
/// `$make` (an async expression) builds.
#[macro_export]
macro_rules! presence_tracker_suite {
    ($make:expr) => {
        $crate::__testkit_clauses!(presence, $make, make => {
            let tracker: ::std::sync::Arc<dyn $crate::PresenceTracker> = make.await;
            clause(tracker).await
        }, [
            unknown_users_are_offline_and_never_seen,
            online_while_any_connection_is_open,
            repeated_connect_and_unknown_disconnect_change_nothing,
            last_seen_is_the_last_close,
            expired_lease_means_offline_and_is_swept_once,
            renewed_lease_stays_online,
            renew_does_not_revive_an_expired_lease,
            users_on_another_live_node_stay_online,
            concurrent_connections_report_one_transition_each_way,
        ]);
    };
}

/// Runs every [`Broker`](crate::Broker) clause. `$make` is an expression giving a closure
/// `Fn(NodeId) -> impl Future<Output = Arc<impl Broker>>` that builds one node's broker,
/// all of them joined (the same bus, server or cluster).
#[macro_export]
macro_rules! broker_suite {
    ($make:expr) => {
        $crate::__testkit_clauses!(broker, $make, make => clause(make).await, [
            events_reach_subscribed_nodes_only,
            publisher_does_not_hear_itself,
            unsubscribe_stops_delivery,
            events_arrive_unchanged,
            a_burst_arrives_whole,
        ]);
    };
}

#[cfg(test)]
mod tests {
    /// Every public clause function is listed in its suite macro, so a backend that runs
    /// the macro runs every clause.
    #[test]
    fn every_clause_is_in_its_macro() {
        let macros = include_str!("mod.rs");
        for (module, source) in [
            ("store", include_str!("store.rs")),
            ("delivery", include_str!("delivery.rs")),
            ("presence", include_str!("presence.rs")),
            ("broker", include_str!("broker.rs")),
        ] {
            let mut count = 0;
            for line in source.lines() {
                let Some(rest) = line.strip_prefix("pub async fn ") else {
                    continue;
                };
                let name = rest.split(['(', '<']).next().unwrap_or_default();
                count += 1;
                assert!(
                    macros.contains(&format!("            {name},\n")),
                    "testkit::{module}::{name} is not run by its suite macro"
                );
            }
            assert!(count >= 5, "{module}: found only {count} clauses");
        }
    }
}
