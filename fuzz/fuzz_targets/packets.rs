//! OK / ERR / EOF / lenenc parsers and the handshake patchers on arbitrary bytes.
#![no_main]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::packets(data));
