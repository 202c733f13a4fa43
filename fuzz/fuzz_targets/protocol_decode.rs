//! `Request::decode` (and `ServerFrame::decode`) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chat_transport_ws::fuzzing::protocol_decode(data);
});
