//! What survives closing and reopening the database file, and what the store refuses to
//! open.

use chat_core::delivery::CursorUpdate;
use chat_core::store::HistoryQuery;
use chat_core::{
    ClientMsgId, DeliveryTracker, MessageStore, NewMessage, RoomId, Seq, Timestamp, UserId,
};
use chat_store_sqlite::{Durability, SCHEMA_VERSION, SqliteConfig, SqliteStore};

fn message(room: &RoomId, from: &UserId, cid: &str) -> NewMessage {
    NewMessage {
        room: room.clone(),
        from: from.clone(),
        cid: ClientMsgId::new(cid).expect("cid"),
        body: format!("body {cid}"),
        meta: None,
        ts: Timestamp::from_millis(7),
    }
}

#[tokio::test]
async fn history_epochs_members_and_cursors_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chat.db");
    let room = RoomId::new("general").expect("room");
    let alice = UserId::new("alice").expect("user");
    let store = SqliteConfig::new(&path)
        .durability(Durability::Normal)
        .open()
        .await
        .expect("open");
    let (info, _) = store.ensure_room(&room).await.expect("ensure_room");
    store.add_member(&room, &alice).await.expect("add_member");
    for i in 1..=5 {
        store
            .append(message(&room, &alice, &format!("c{i}")))
            .await
            .expect("append");
    }
    store
        .advance(
            &room,
            &alice,
            CursorUpdate {
                delivered: Some(Seq::new(4).expect("seq")),
                read: Some(Seq::new(2).expect("seq")),
            },
        )
        .await
        .expect("advance");
    let before = store
        .history(&room, HistoryQuery::Latest, 50)
        .await
        .expect("history");
    drop(store);

    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(
        store.durability(),
        Durability::Full,
        "the level is per open, not stored"
    );
    let (again, created) = store.ensure_room(&room).await.expect("ensure_room");
    assert!(!created, "the room is still there");
    assert_eq!(
        again.epoch, info.epoch,
        "the epoch survives: clients' resume points stay valid"
    );
    assert_eq!(again.latest.get(), 5);
    assert_eq!(
        store
            .history(&room, HistoryQuery::Latest, 50)
            .await
            .expect("history"),
        before
    );
    assert!(store.is_member(&room, &alice).await.expect("is_member"));
    let cursors = store.cursors(&room, &alice).await.expect("cursors");
    assert_eq!((cursors.delivered.get(), cursors.read.get()), (4, 2));
    let retry = store
        .append(message(&room, &alice, "c3"))
        .await
        .expect("retry");
    assert!(
        retry.dup && retry.message.seq.get() == 3,
        "idempotency survives too"
    );
    let next = store
        .append(message(&room, &alice, "c6"))
        .await
        .expect("append");
    assert_eq!(
        next.message.seq.get(),
        6,
        "the sequence goes on without a gap"
    );
}

#[tokio::test]
async fn a_newer_schema_or_another_applications_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer).await.expect("create"));
    let conn = rusqlite::Connection::open(&newer).expect("open by hand");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .expect("bump the version");
    drop(conn);
    let refused = SqliteStore::open(&newer).await.expect_err("a newer schema");
    assert!(refused.to_string().contains("schema version"), "{refused}");

    let foreign = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&foreign).expect("open by hand");
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .expect("another application's table");
    drop(conn);
    let refused = SqliteStore::open(&foreign)
        .await
        .expect_err("a foreign database");
    assert!(
        refused.to_string().contains("not a chat-engine database"),
        "{refused}"
    );
}
