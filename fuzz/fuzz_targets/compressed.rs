//! Compressed-protocol frames from a peer (wire::compress): zip bombs,
//! lying lengths, corrupt zlib; inflate stays within what was asked and
//! stated, and thaw's own frames read back.
#![no_main]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::compressed(data));
