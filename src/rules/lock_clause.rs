//! Finding the trailing lock clause with the tokenizer.
//!
//! sqlparser 0.64 fails on `LOCK IN SHARE MODE` and MariaDB's `WAIT n`, and
//! gives `Query.locks` no span, so the clause is found on tokens (which have
//! locations), cut from the original text, and the rest is parsed.
use super::lex::{Tok, depths};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockClause {
    /// No lock clause at the outer level.
    None,
    /// One or more trailing clauses: tokens `first..end` (indices into the
    /// statement's tokens) and the byte range to cut, which also takes the
    /// blanks just before the clause.
    Trailing { first: usize, end: usize, cut_start: usize, cut_end: usize },
    /// A lock clause followed by something else (`FOR UPDATE INTO @x`, a
    /// UNION, ...): a locking read this module does not understand.
    NotTrailing,
}

impl LockClause {
    pub fn is_locking(&self) -> bool {
        !matches!(self, LockClause::None)
    }
}

/// The statement without its trailing lock clause (what thaw prepares as
/// the shadow of a prepared locking read); `None` when it has none thaw
/// can cut.
pub fn cut(sql: &str, modes: super::lex::Modes) -> Option<String> {
    let toks = super::lex::lex(sql, modes).ok()?;
    match find(&toks) {
        LockClause::Trailing { cut_start, cut_end, .. } => Some(format!("{}{}", &sql[..cut_start], &sql[cut_end..])),
        _ => None,
    }
}

/// Find the lock clause of one statement's tokens (no trailing `;`).
pub fn find(toks: &[Tok]) -> LockClause {
    let depth = depths(toks);
    let sig: Vec<usize> = (0..toks.len()).filter(|&i| !toks[i].is_trivia()).collect();
    let mut seen = false;
    for (k, &i) in sig.iter().enumerate() {
        if depth[i] != 0 || !starts_clause(toks, &sig[k..]) {
            continue;
        }
        seen = true;
        if let Some(n) = parse_clauses(toks, &sig[k..])
            && k + n == sig.len()
        {
            let last = sig[k + n - 1];
            let mut cut_start = toks[i].start;
            let mut j = i;
            while j > 0 && toks[j - 1].is_blank() {
                j -= 1;
                cut_start = toks[j].start;
            }
            return LockClause::Trailing { first: i, end: last + 1, cut_start, cut_end: toks[last].end };
        }
    }
    if seen { LockClause::NotTrailing } else { LockClause::None }
}

fn starts_clause(toks: &[Tok], s: &[usize]) -> bool {
    let kw = |n: usize, k: Keyword| s.get(n).is_some_and(|&i| toks[i].is_kw(k));
    (kw(0, Keyword::FOR) && (kw(1, Keyword::UPDATE) || kw(1, Keyword::SHARE)))
        || (kw(0, Keyword::LOCK) && kw(1, Keyword::IN) && kw(2, Keyword::SHARE) && kw(3, Keyword::MODE))
}

/// Number of significant tokens taken by a run of lock clauses at the start
/// of `s`, or None when it is not one.
fn parse_clauses(toks: &[Tok], s: &[usize]) -> Option<usize> {
    let kw = |n: usize, k: Keyword| s.get(n).is_some_and(|&i| toks[i].is_kw(k));
    let mut n = 0;
    let mut clauses = 0;
    loop {
        if kw(n, Keyword::FOR) && (kw(n + 1, Keyword::UPDATE) || kw(n + 1, Keyword::SHARE)) {
            n += 2;
            if kw(n, Keyword::OF) {
                n += 1;
                loop {
                    // name or schema.name
                    if !matches!(s.get(n).map(|&i| &toks[i].token), Some(Token::Word(_))) {
                        return None;
                    }
                    n += 1;
                    if matches!(s.get(n).map(|&i| &toks[i].token), Some(Token::Period)) {
                        n += 1;
                        if !matches!(s.get(n).map(|&i| &toks[i].token), Some(Token::Word(_))) {
                            return None;
                        }
                        n += 1;
                    }
                    if matches!(s.get(n).map(|&i| &toks[i].token), Some(Token::Comma)) {
                        n += 1;
                    } else {
                        break;
                    }
                }
            }
        } else if kw(n, Keyword::LOCK) && kw(n + 1, Keyword::IN) && kw(n + 2, Keyword::SHARE) && kw(n + 3, Keyword::MODE) {
            n += 4;
        } else {
            break;
        }
        clauses += 1;
        let wait = s.get(n).is_some_and(|&i| toks[i].is_word_ci("WAIT"))
            && matches!(s.get(n + 1).map(|&i| &toks[i].token), Some(Token::Number(..)));
        if kw(n, Keyword::NOWAIT) {
            n += 1;
        } else if (kw(n, Keyword::SKIP) && kw(n + 1, Keyword::LOCKED)) || wait {
            n += 2;
        }
    }
    (clauses > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::lex::{Modes, lex};

    /// The text with the clause cut, or None when there is none / not trailing.
    fn cut(sql: &str) -> Option<String> {
        let toks = lex(sql, Modes::default()).unwrap();
        match find(&toks) {
            LockClause::Trailing { cut_start, cut_end, .. } => Some(format!("{}{}", &sql[..cut_start], &sql[cut_end..])),
            _ => None,
        }
    }

    #[test]
    fn every_form() {
        let base = "SELECT * FROM users WHERE id = 8";
        for clause in [
            "FOR UPDATE",
            "FOR SHARE",
            "LOCK IN SHARE MODE",
            "for update nowait",
            "FOR UPDATE SKIP LOCKED",
            "FOR SHARE NOWAIT",
            "FOR UPDATE OF users",
            "FOR UPDATE OF users, db.other SKIP LOCKED",
            "FOR UPDATE WAIT 5",
            "LOCK IN SHARE MODE WAIT 10",
            "LOCK IN SHARE MODE NOWAIT",
            "FOR UPDATE OF a FOR SHARE OF b NOWAIT",
            "FOR /* odd */ UPDATE",
        ] {
            assert_eq!(cut(&format!("{base} {clause}")).as_deref(), Some(base), "{clause}");
        }
    }

    #[test]
    fn trailing_trivia_kept() {
        assert_eq!(
            cut("SELECT 1 FROM users WHERE id = 8 FOR UPDATE -- why\n").as_deref(),
            Some("SELECT 1 FROM users WHERE id = 8 -- why\n")
        );
        assert_eq!(
            cut("SELECT 1 FROM users WHERE id = 8 /* c */ FOR UPDATE /* d */  ").as_deref(),
            Some("SELECT 1 FROM users WHERE id = 8 /* c */ /* d */  ")
        );
        assert_eq!(cut("SELECT 1 FROM users WHERE id = 8\n\tFOR UPDATE\n").as_deref(), Some("SELECT 1 FROM users WHERE id = 8\n"));
    }

    #[test]
    fn sqlalchemy_multiline() {
        let sql = "SELECT users.id, users.balance \nFROM users \nWHERE users.id = 8 FOR UPDATE";
        assert_eq!(cut(sql).as_deref(), Some("SELECT users.id, users.balance \nFROM users \nWHERE users.id = 8"));
        let sql = "SELECT users.id, users.username, users.balance, users.frozen_balance, users.updated_at \nFROM users \nWHERE users.id = 8 FOR UPDATE SKIP LOCKED";
        assert!(cut(sql).unwrap().ends_with("WHERE users.id = 8"));
    }

    #[test]
    fn multibyte_before_clause() {
        let sql = "SELECT 'é€日本' AS x\nFROM users WHERE name = 'ü' FOR UPDATE";
        assert_eq!(cut(sql).as_deref(), Some("SELECT 'é€日本' AS x\nFROM users WHERE name = 'ü'"));
    }

    #[test]
    fn inside_strings_comments_and_subqueries_ignored() {
        let toks = |s: &str| lex(s, Modes::default()).unwrap();
        assert_eq!(find(&toks("SELECT 'FOR UPDATE' FROM users")), LockClause::None);
        assert_eq!(find(&toks("SELECT 1 FROM users -- FOR UPDATE\n")), LockClause::None);
        assert_eq!(find(&toks("SELECT * FROM (SELECT * FROM users FOR UPDATE) x")), LockClause::None);
        assert_eq!(find(&toks("SELECT `FOR` FROM users")), LockClause::None);
        assert_eq!(find(&toks("SELECT id FROM users WHERE id = 8 FOR UPDATE INTO @x")), LockClause::NotTrailing);
        assert_eq!(find(&toks("SELECT id FROM users FOR UPDATE UNION SELECT 1")), LockClause::NotTrailing);
        assert_eq!(find(&toks("LOCK TABLES users WRITE")), LockClause::None);
    }

    #[test]
    fn no_backslash_escapes_changes_where_strings_end() {
        // With backslash escapes the quote is escaped and FOR UPDATE is inside
        // the string; without them the string ends at the backslash.
        let sql = r"SELECT 'a\' FOR UPDATE -- '";
        let on = lex(sql, Modes::default()).unwrap();
        assert_eq!(find(&on), LockClause::None);
        let off = lex(sql, Modes { backslash_escapes: false, ansi_quotes: false }).unwrap();
        assert!(matches!(find(&off), LockClause::Trailing { .. }));
    }
}
