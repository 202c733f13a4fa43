//! The whole chat-core testkit against the in-memory backends.

#![allow(clippy::unwrap_used)]

mod store {
    use std::sync::Arc;

    chat_core::message_store_suite!(async { Arc::new(chat_store_memory::MemoryStore::new()) });
}

mod delivery {
    use std::sync::Arc;

    chat_core::delivery_tracker_suite!(async {
        let store = Arc::new(chat_store_memory::MemoryStore::new());
        (store.clone(), store)
    });
}

mod presence {
    use std::sync::Arc;
    use std::time::Duration;

    chat_core::presence_tracker_suite!(async {
        Arc::new(chat_store_memory::MemoryPresence::new(Duration::from_secs(
            30,
        )))
    });
}

mod broker {
    use std::sync::Arc;

    use chat_core::broker::LocalBus;

    chat_core::broker_suite!({
        let bus = LocalBus::new();
        move |node| {
            let broker = bus.broker(node);
            async move { Arc::new(broker) }
        }
    });
}
