//! A whole WebSocket connection to a `WsServer`: one byte for the write size, then the
//! client's frames after its `hello`.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use chat_core::auth::DevAuthenticator;
use chat_core::{Engine, EngineConfig};
use chat_transport_ws::fuzzing::ConnectionHarness;

fn engine(config: EngineConfig) -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
        .config(config)
        .build()
}

thread_local! {
    static HARNESS: RefCell<ConnectionHarness> = RefCell::new(ConnectionHarness::new(engine));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.with(|harness| harness.borrow_mut().run(data));
});
