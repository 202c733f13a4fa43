//! `Engine::serve` over in-memory channels: a fresh user's `hello`, then the input's
//! `\n`-separated frames.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use chat_core::auth::DevAuthenticator;
use chat_core::{Clock, Engine, EngineConfig};
use chat_transport_ws::fuzzing::EngineHarness;

fn engine(config: EngineConfig) -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
        .config(config)
        .clock(Clock::tokio())
        .build()
}

fn harness() -> EngineHarness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    EngineHarness::new(runtime, engine)
}

thread_local! {
    static HARNESS: RefCell<EngineHarness> = RefCell::new(harness());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.with(|harness| harness.borrow_mut().run(data));
});
