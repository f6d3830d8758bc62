//! Transaction control read off the first words of a statement: cheap, so
//! it runs for every statement inside a transaction. The server's status
//! flags say when a transaction ended; only these statements end or begin
//! one without the flags showing it (BEGIN inside a transaction, AND CHAIN)
//! or act on savepoints.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TxControl {
    #[default]
    None,
    /// BEGIN / START TRANSACTION: commits an open transaction first.
    Begin,
    Commit {
        chain: bool,
    },
    Rollback {
        chain: bool,
    },
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// LOCK TABLES: commits an open transaction first; with autocommit off
    /// the server reports a new one open at once, so the status flags never
    /// show the end.
    ImplicitCommit,
    /// XA START / XA BEGIN (`start`), XA COMMIT / XA ROLLBACK.
    Xa {
        start: bool,
    },
}

/// Up to `n` leading words, uppercased, skipping whitespace and comments.
/// An executable comment (`/*!`, `/*M!`) stops the scan: its text runs.
fn words(sql: &[u8], n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() && out.len() < n {
        let b = sql[i];
        if b.is_ascii_whitespace() || b == b';' && out.is_empty() {
            i += 1;
        } else if sql[i..].starts_with(b"/*!") || sql[i..].starts_with(b"/*M!") {
            out.push(String::from("/*!"));
            break;
        } else if sql[i..].starts_with(b"/*") {
            i = sql[i + 2..].windows(2).position(|w| w == b"*/").map_or(sql.len(), |p| i + 2 + p + 2);
        } else if b == b'#' || (sql[i..].starts_with(b"--") && sql.get(i + 2).is_none_or(|&c| c <= b' ' || c == 0x7f)) {
            // The server takes `--` followed by a blank or any control
            // character (`--\r\n` of CRLF text), or the end, for a comment.
            i = sql[i..].iter().position(|&c| c == b'\n').map_or(sql.len(), |p| i + p + 1);
        } else if b == b'`' || b == b'"' {
            // `"` quotes a name under ANSI_QUOTES (and is a syntax error
            // otherwise); a doubled quote inside stands for one.
            let mut name = Vec::new();
            i += 1;
            while i < sql.len() {
                if sql[i] == b {
                    if sql.get(i + 1) == Some(&b) {
                        name.push(b);
                        i += 2;
                        continue;
                    }
                    break;
                }
                name.push(sql[i]);
                i += 1;
            }
            out.push(String::from_utf8_lossy(&name).into_owned());
            i += 1;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 {
            let start = i;
            while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$' || sql[i] >= 0x80) {
                i += 1;
            }
            out.push(String::from_utf8_lossy(&sql[start..i]).to_ascii_uppercase());
        } else {
            out.push(String::from(b as char));
            i += 1;
        }
    }
    out
}

pub fn tx_control(sql: &[u8]) -> TxControl {
    let w = words(sql, 8);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let name_after = |i: usize| w.get(i).map(|s| s.to_string()).unwrap_or_default();
    match w.as_slice() {
        // `BEGIN NOT ATOMIC` is a compound statement, not a transaction.
        ["BEGIN", "NOT", ..] => TxControl::None,
        ["BEGIN", ..] | ["START", "TRANSACTION", ..] => TxControl::Begin,
        ["COMMIT", rest @ ..] => TxControl::Commit { chain: chains(rest) },
        ["ROLLBACK", rest @ ..] => {
            let rest: Vec<&str> = rest.iter().copied().filter(|s| *s != "WORK").collect();
            match rest.as_slice() {
                ["TO", "SAVEPOINT", ..] => TxControl::RollbackTo(name_after(w.iter().position(|s| *s == "SAVEPOINT").unwrap_or(0) + 1)),
                ["TO", ..] => TxControl::RollbackTo(name_after(w.iter().position(|s| *s == "TO").unwrap_or(0) + 1)),
                _ => TxControl::Rollback { chain: chains(&rest) },
            }
        }
        ["SAVEPOINT", ..] => TxControl::Savepoint(name_after(1)),
        ["RELEASE", "SAVEPOINT", ..] => TxControl::Release(name_after(2)),
        ["LOCK", "TABLE" | "TABLES", ..] => TxControl::ImplicitCommit,
        ["XA", "START" | "BEGIN", ..] => TxControl::Xa { start: true },
        ["XA", "COMMIT" | "ROLLBACK", ..] => TxControl::Xa { start: false },
        _ => TxControl::None,
    }
}

/// `COMMIT` or `COMMIT WORK` and nothing else (no CHAIN, no RELEASE).
pub fn is_plain_commit(sql: &[u8]) -> bool {
    let end = sql.iter().rposition(|b| !b.is_ascii_whitespace() && *b != b';').map_or(0, |i| i + 1);
    let w = words(&sql[..end], 3);
    matches!(w.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), ["COMMIT"] | ["COMMIT", "WORK"])
}

fn chains(rest: &[&str]) -> bool {
    rest.windows(2).any(|p| p == ["AND", "CHAIN"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_statements() {
        assert_eq!(tx_control(b"begin"), TxControl::Begin);
        assert_eq!(tx_control(b"  /* x */ START TRANSACTION READ ONLY"), TxControl::Begin);
        assert_eq!(tx_control(b"BEGIN NOT ATOMIC SELECT 1; END"), TxControl::None);
        assert_eq!(tx_control(b"COMMIT"), TxControl::Commit { chain: false });
        assert_eq!(tx_control(b"commit work and chain"), TxControl::Commit { chain: true });
        assert_eq!(tx_control(b"COMMIT AND NO CHAIN"), TxControl::Commit { chain: false });
        assert_eq!(tx_control(b"ROLLBACK"), TxControl::Rollback { chain: false });
        assert_eq!(tx_control(b"ROLLBACK AND CHAIN"), TxControl::Rollback { chain: true });
        assert_eq!(tx_control(b"ROLLBACK TO SAVEPOINT sp1"), TxControl::RollbackTo("SP1".into()));
        assert_eq!(tx_control(b"rollback work to `Sp 2`"), TxControl::RollbackTo("Sp 2".into()));
        assert_eq!(tx_control(b"SAVEPOINT a"), TxControl::Savepoint("A".into()));
        assert_eq!(tx_control(b"SAVEPOINT \"b\""), TxControl::Savepoint("b".into()));
        assert_eq!(tx_control(b"SAVEPOINT `a``b`"), TxControl::Savepoint("a`b".into()));
        assert_eq!(tx_control(b"ROLLBACK TO SAVEPOINT \"b\""), TxControl::RollbackTo("b".into()));
        assert_eq!(tx_control(b"RELEASE SAVEPOINT a"), TxControl::Release("A".into()));
        assert_eq!(tx_control(b"-- c\nCOMMIT"), TxControl::Commit { chain: false });
        assert_eq!(tx_control(b"--\r\nROLLBACK TO a"), TxControl::RollbackTo("A".into()));
        assert_eq!(tx_control(b"--\x01 x\nSAVEPOINT a"), TxControl::Savepoint("A".into()));
        assert_eq!(tx_control(b"--1"), TxControl::None);
        assert_eq!(tx_control(b"/*!COMMIT*/"), TxControl::None);
        assert_eq!(tx_control(b"SELECT 1"), TxControl::None);
        assert_eq!(tx_control(b"lock tables t write"), TxControl::ImplicitCommit);
        assert_eq!(tx_control(b"LOCK TABLE t READ"), TxControl::ImplicitCommit);
        assert_eq!(tx_control(b"XA START 'x'"), TxControl::Xa { start: true });
        assert_eq!(tx_control(b"xa rollback 'x'"), TxControl::Xa { start: false });
        assert!(is_plain_commit(b"commit"));
        assert!(is_plain_commit(b"COMMIT WORK;"));
        assert!(!is_plain_commit(b"COMMIT RELEASE"));
        assert!(!is_plain_commit(b"COMMIT AND NO CHAIN"));
    }
}
