//! The chat-core testkit against the Redis in `CHAT_TEST_REDIS_URL`: the broker suite with
//! every clause's nodes on a channel prefix of their own, the presence suite with every
//! clause on a key prefix of its own (deleted after it). Without the variable, every clause
//! prints why it is skipped and passes.

mod support;

mod broker {
    use std::sync::Arc;

    chat_core::broker_suite!({
        let Some(url) = crate::support::url() else {
            return;
        };
        let prefix = crate::support::unique_prefix();
        move |node| {
            let (url, prefix) = (url.clone(), prefix.clone());
            async move { Arc::new(crate::support::broker(&url, &prefix, node).await) }
        }
    });
}

mod presence {
    use std::sync::Arc;
    use std::time::Duration;

    chat_core::presence_tracker_suite!({
        let Some(url) = crate::support::url() else {
            return;
        };
        async move { Arc::new(crate::support::TempPresence::new(&url, Duration::from_secs(30)).await) }
    });
}
