//! The response state machine fed arbitrary packets, in both EOF modes.
#![no_main]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::response(data));
