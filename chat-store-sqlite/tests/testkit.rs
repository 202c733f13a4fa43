//! The whole chat-core testkit against `SqliteStore`: a fresh database file per clause.

mod support;

mod store {
    use std::sync::Arc;

    chat_core::message_store_suite!(async { Arc::new(crate::support::temp_store().await) });
}

mod delivery {
    use std::sync::Arc;

    chat_core::delivery_tracker_suite!(async {
        let store = Arc::new(crate::support::temp_store().await);
        (store.clone(), store)
    });
}
