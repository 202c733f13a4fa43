//! The whole chat-core testkit against `PostgresStore` on the database in
//! `CHAT_TEST_POSTGRES_URL`, each clause in a schema of its own (dropped after it). Without
//! the variable, every clause prints why it is skipped and passes.

mod support;

mod store {
    use std::sync::Arc;

    chat_core::message_store_suite!({
        let Some(url) = crate::support::url() else {
            return;
        };
        async move { Arc::new(crate::support::temp_schema_store(&url).await) }
    });
}

mod delivery {
    use std::sync::Arc;

    chat_core::delivery_tracker_suite!({
        let Some(url) = crate::support::url() else {
            return;
        };
        async move {
            let store = Arc::new(crate::support::temp_schema_store(&url).await);
            (store.clone(), store)
        }
    });
}
