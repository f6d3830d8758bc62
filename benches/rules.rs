//! What the rules cost per statement: the prefilter on statements that are
//! not candidates (most of an app's traffic), and full planning of the
//! legacy app's check read and absolute write. Run: `cargo bench --bench rules`.
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use thaw::rules::{Captures, PlanContext, RuleSet};

const NOT_CANDIDATES: &[&str] = &[
    "SELECT c FROM sbtest1 WHERE id=5034",
    "UPDATE sbtest3 SET k=k+1 WHERE id=4992",
    "INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES ('5f324a7861f642c8bb02ae57d556eda3', 8, 616, 'frozen') RETURNING compute_freeze_logs.id, compute_freeze_logs.created_at",
    "SELECT users.id, users.username FROM users WHERE users.id = 8",
    "COMMIT",
];
const CHECK_READ: &str =
    "SELECT users.id, users.username, users.balance, users.frozen_balance, users.updated_at \nFROM users \nWHERE users.id = 8 FOR UPDATE";
const ABSOLUTE_WRITE: &str = "UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8";

fn bench(c: &mut Criterion) {
    let rules = RuleSet::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))).expect("shipped rules load");
    c.bench_function("prefilter: 5 non-candidate statements", |b| {
        b.iter(|| NOT_CANDIDATES.iter().filter(|s| rules.is_candidate(black_box(s))).count())
    });
    let mut captures = Captures::default();
    captures.seed("", "users", "8", "frozen_balance", Some("616".into()));
    captures.seed("", "users", "8", "balance", Some("2000".into()));
    let ctx = PlanContext {
        no_backslash_escapes: false,
        ansi_quotes: false,
        in_transaction: true,
        simultaneous_assignment: Some(false),
        captures: &captures,
        schema: None,
    };
    c.bench_function("plan: check read (unlock + capture)", |b| b.iter(|| rules.plan(black_box(CHECK_READ), &ctx)));
    c.bench_function("plan: absolute write (delta + guard)", |b| b.iter(|| rules.plan(black_box(ABSOLUTE_WRITE), &ctx)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
