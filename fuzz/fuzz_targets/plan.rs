//! Prefilter, planner and statement classifier with the shipped rules/,
//! over a session of statements (see `harness::plan_session`).
#![no_main]
#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;
use thaw::rules::RuleSet;

static RULES: OnceLock<RuleSet> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rules = RULES.get_or_init(|| harness::shipped_rules(concat!(env!("CARGO_MANIFEST_DIR"), "/..")));
    harness::plan_session(rules, data);
});
