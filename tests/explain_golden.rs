//! Golden output of `thaw explain --file` for the legacy app's freeze flows
//! (tests/python/legacy/app.py) under the shipped rules/billing.yaml:
//! a real MariaDB general log of `check_and_freeze` and the two-session
//! variant as a plain SQL file, both with `-- rows:` for the reads, and the
//! freeze with a read of another table in the protection window (validated
//! first); the freeze log also as `--shadow` runs it. Each case has
//! `tests/explain/NAME.txt` and `NAME.json`.
//!
//! After an intended change of the output, rewrite the goldens with
//! `THAW_BLESS=1 cargo test --test explain_golden` and review the diff.
use std::path::{Path, PathBuf};
use std::process::Command;

/// (golden name, input, extra arguments).
const CASES: [(&str, &str, &[&str]); 4] = [
    ("legacy-freeze", "legacy-freeze.log", &[]),
    // The same log as `thaw run --shadow` runs it: sent as written, counted.
    ("legacy-freeze-shadow", "legacy-freeze.log", &["--shadow"]),
    ("legacy-freeze-two-session", "legacy-freeze-two-session.sql", &["--schema", "billing"]),
    ("check-then-count", "check-then-count.sql", &["--schema", "billing"]),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary, as an operator runs it (relative paths: they show in the output).
fn explain(input: &str, extra: &[&str], json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thaw"));
    cmd.current_dir(root()).args(["explain", "--rules", "rules", "--file"]).arg(Path::new("tests/explain").join(input)).args(extra);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run thaw explain");
    assert!(out.status.success(), "thaw explain {input}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn check(golden: &Path, got: &str) {
    if std::env::var_os("THAW_BLESS").is_some() {
        std::fs::write(golden, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(golden)
        .unwrap_or_else(|e| panic!("{}: {e} (THAW_BLESS=1 cargo test --test explain_golden writes it)", golden.display()));
    if want != got {
        let line = want.lines().zip(got.lines()).position(|(a, b)| a != b).unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{} differs from thaw's output from line {}:\n  golden: {:?}\n  output: {:?}\nTHAW_BLESS=1 cargo test --test explain_golden rewrites it; review the diff",
            golden.display(),
            line + 1,
            want.lines().nth(line),
            got.lines().nth(line)
        );
    }
}

#[test]
fn legacy_freeze_flows_text_and_json() {
    for (stem, input, extra) in CASES {
        let dir = root().join("tests/explain");
        check(&dir.join(format!("{stem}.txt")), &explain(input, extra, false));
        let json = explain(input, extra, true);
        check(&dir.join(format!("{stem}.json")), &json);
    }
}

/// What the goldens must show, so a bless cannot silently accept a regression.
#[test]
fn legacy_freeze_keeps_its_rewrites() {
    let text = explain("legacy-freeze.log", &[], false);
    assert!(text.contains("  plan: unlock, rule users-balance (table users), proven\n"), "{text}");
    assert!(text.contains("+UPDATE users SET frozen_balance=frozen_balance + 616, updated_at=now() WHERE (users.id = 8) AND (balance - (frozen_balance + 616) >= 0) AND ((frozen_balance + 616) >= 0)"), "{text}");
    assert!(text.contains("billing.users 8: balance=5000, frozen_balance=1232, username='bob' [in window: unprotected]"), "{text}");
    assert!(!text.contains("session: refuse") && !text.contains("re-lock and compare"), "{text}");
    let text = explain("check-then-count.sql", &["--schema", "billing"], false);
    assert!(text.contains("  session: re-lock and compare users 8, then send it as written\n"), "{text}");
    let text = explain("legacy-freeze.log", &["--shadow"], false);
    assert!(!text.contains("session: send the rewritten statement"), "shadow mode sends what the app sent: {text}");
    assert!(text.contains(r#"counts: thaw_shadow_actions_total{rule="users-balance",action="delta"}"#), "{text}");
}
