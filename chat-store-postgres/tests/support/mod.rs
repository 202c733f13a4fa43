//! Test helpers: a store in a schema of its own on the database in
//! `CHAT_TEST_POSTGRES_URL`, dropped with the store.

#![allow(dead_code, unreachable_pub)]

use chat_core::testkit::Guarded;
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

/// A [`PostgresStore`] in a fresh schema, dropped after the store.
pub type TempSchemaStore = Guarded<PostgresStore>;

pub async fn temp_schema_store(url: &str) -> TempSchemaStore {
    let schema = unique_schema();
    let store = PostgresConfig::new(url)
        .schema(&schema)
        .pool_size(8)
        .connect()
        .await
        .expect("connect the store");
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema,
    };
    Guarded::new(store, guard)
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
