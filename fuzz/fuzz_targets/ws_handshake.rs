//! The HTTP request head of the WebSocket upgrade: three setting bytes, then the request.
#![no_main]

use std::cell::RefCell;

use chat_transport_ws::fuzzing::HandshakeHarness;

thread_local! {
    static HARNESS: RefCell<HandshakeHarness> = RefCell::new(HandshakeHarness::new());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.with(|harness| harness.borrow_mut().run(data));
});
