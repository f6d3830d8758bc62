//! Rule files (RuleSet::from_yaml) and the process config (Config::parse)
//! from arbitrary text; a rule set that loads is planned and checked.
#![no_main]
#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;

static PROBE: OnceLock<Vec<String>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let probe = PROBE.get_or_init(harness::legacy_statements);
    harness::loaders(data, probe);
});
