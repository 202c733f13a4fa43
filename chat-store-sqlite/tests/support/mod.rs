//! Test helpers: a store in a temporary directory that is removed with it.

#![allow(dead_code, unreachable_pub)]

use chat_core::testkit::Guarded;
use chat_store_sqlite::SqliteStore;

/// A [`SqliteStore`] on a fresh file; the directory goes with the store.
pub type TempStore = Guarded<SqliteStore>;

pub async fn temp_store() -> TempStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("chat.db"))
        .await
        .expect("open the store");
    Guarded::new(store, dir)
}
