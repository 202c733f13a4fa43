//! The WebSocket frame header parser, unmasking and the reference reader on a client's
//! arbitrary byte stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chat_transport_ws::fuzzing::ws_frames(data);
});
