//! Test helpers: a store in a schema of its own on the database in
//! `CHAT_TEST_POSTGRES_URL`, dropped with the store.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use chat_core::delivery::{CursorChange, CursorUpdate, Cursors};
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{DeliveryTracker, MessageStore, NewMessage, Result, RoomId, UserId};
use chat_store_postgres::{PostgresConfig, PostgresStore};

/// The variable that names the test database.
pub const URL_VAR: &str = "CHAT_TEST_POSTGRES_URL";

/// The test database's URL, or `None` (with the reason printed) when it is not set.
pub fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: {URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/test; .ci/run sets it)"
            );
            None
        }
    }
}

/// A schema name no other run uses.
pub fn unique_schema() -> String {
    format!(
        "chat_test_{}",
        chat_core::testkit::unique("s").replace('-', "_")
    )
}

/// Drops `schema` (and everything in it) on a connection of its own, from any context.
pub fn drop_schema(url: &str, schema: &str) {
    let (url, name) = (url.to_owned(), schema.to_owned());
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to drop the schema");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to drop the schema");
            tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await
                .expect("drop the test schema");
        });
    })
    .join();
    if dropped.is_err() {
        eprintln!("could not drop the test schema {schema}");
    }
}

/// A [`PostgresStore`] in a fresh schema, dropped when this is.
#[derive(Debug)]
pub struct TempSchemaStore {
    pub store: PostgresStore,
    pub url: String,
    pub schema: String,
}

impl TempSchemaStore {
    pub async fn new(url: &str) -> TempSchemaStore {
        let schema = unique_schema();
        let store = PostgresConfig::new(url)
            .schema(&schema)
            .pool_size(8)
            .connect()
            .await
            .expect("connect the store");
        TempSchemaStore {
            store,
            url: url.to_owned(),
            schema,
        }
    }
}

impl Drop for TempSchemaStore {
    fn drop(&mut self) {
        drop_schema(&self.url, &self.schema);
    }
}

#[async_trait]
impl MessageStore for TempSchemaStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        self.store.ensure_room(room).await
    }
    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        self.store.room(room).await
    }
    async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.store.append(message).await
    }
    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.store.history(room, query, limit).await
    }
    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.add_member(room, user).await
    }
    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.remove_member(room, user).await
    }
    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        self.store.is_member(room, user).await
    }
    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        self.store.members(room).await
    }
    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        self.store.member_count(room).await
    }
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        self.store.rooms_of(user).await
    }
}

#[async_trait]
impl DeliveryTracker for TempSchemaStore {
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors> {
        self.store.cursors(room, user).await
    }
    async fn advance(
        &self,
        room: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange> {
        self.store.advance(room, user, update).await
    }
    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>> {
        self.store.room_cursors(room).await
    }
    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>> {
        self.store.user_cursors(user).await
    }
}

/// A fresh, empty schema on the test database, dropped with this guard; for servers
/// started as processes, which take it as part of their URL.
#[derive(Debug)]
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl SchemaGuard {
    pub async fn create(url: &str) -> SchemaGuard {
        let schema = unique_schema();
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the test schema");
        drop(client);
        let _ = task.await;
        SchemaGuard {
            url: url.to_owned(),
            schema,
        }
    }

    /// The database URL with `search_path` set to the schema (libpq's `options`).
    pub fn url_with_search_path(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.schema
        )
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        drop_schema(&self.url, &self.schema);
    }
}
