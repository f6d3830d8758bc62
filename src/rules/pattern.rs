//! Statement patterns (`statements:` in a rule): SQL with `?` for literals
//! and `...` for a select list. Both the pattern and the statement are
//! parsed with every literal replaced by a placeholder and compared as
//! printed ASTs, so spacing, case, comments, quoting and literal values
//! do not matter but structure does.
use super::lex::{Modes, Tok, lex};
use super::lock_clause::{self, LockClause};
use sqlparser::ast::{SelectItem, SetExpr, Statement, WildcardAdditionalOptions};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

#[derive(Debug, Clone, PartialEq)]
pub struct StatementPattern {
    /// As written in the rule file.
    pub text: String,
    pub(crate) normalized: String,
    pub(crate) any_projection: bool,
    pub(crate) locking: bool,
}

impl StatementPattern {
    pub fn parse(text: &str) -> Result<StatementPattern, String> {
        let mut toks = lex(text, Modes::default()).map_err(|e| e.to_string())?;
        // `...` (three periods) stands for any select list.
        let mut any_projection = false;
        let mut i = 0;
        while i + 2 < toks.len() {
            if toks[i..i + 3].iter().all(|t| t.token == Token::Period) {
                toks[i].token = Token::Mul;
                toks.drain(i + 1..i + 3);
                any_projection = true;
            }
            i += 1;
        }
        while toks.last().is_some_and(|t| t.is_trivia() || t.token == Token::SemiColon) {
            toks.pop();
        }
        if toks.iter().any(|t| t.token == Token::SemiColon) {
            return Err("a statement pattern must be one statement".into());
        }
        let lock = lock_clause::find(&toks);
        let body: Vec<Tok> = match lock {
            LockClause::Trailing { first, end, .. } => toks[..first].iter().chain(&toks[end..]).cloned().collect(),
            LockClause::NotTrailing => return Err("lock clause must end the pattern".into()),
            LockClause::None => toks,
        };
        let normalized = normalize(&body, any_projection).ok_or_else(|| "statement pattern does not parse as SQL".to_string())?;
        if !(normalized.starts_with("select") || normalized.starts_with("update")) {
            return Err("a statement pattern must be a SELECT or an UPDATE".into());
        }
        Ok(StatementPattern { text: text.trim().to_string(), normalized, any_projection, locking: lock.is_locking() })
    }

    pub(crate) fn matches(&self, stmt_body: &[Tok], locking: bool) -> bool {
        self.locking == locking && normalize(stmt_body, self.any_projection).is_some_and(|n| n == self.normalized)
    }
}

/// Printed AST of one statement's tokens with literals as `?`, identifier
/// quotes removed and lowercased. None when it does not parse.
pub(crate) fn normalize(toks: &[Tok], any_projection: bool) -> Option<String> {
    let sig: Vec<&Tok> = toks.iter().filter(|t| !t.is_trivia()).collect();
    let mut out = Vec::with_capacity(sig.len());
    for (k, t) in sig.iter().enumerate() {
        // A sign before a literal is part of it: `-5` and `5` are both `?`.
        if matches!(t.token, Token::Minus | Token::Plus)
            && sig.get(k + 1).is_some_and(|n| n.is_literal())
            && (k == 0 || unary_context(&sig[k - 1].token))
        {
            continue;
        }
        let mut tw = sqlparser::tokenizer::TokenWithSpan::new(t.token.clone(), t.span);
        if t.is_literal() {
            tw.token = Token::Placeholder("?".into());
        }
        out.push(tw);
    }
    let dialect = MySqlDialect {};
    let mut stmts = Parser::new(&dialect).with_tokens_with_locations(out).parse_statements().ok()?;
    if stmts.len() != 1 {
        return None;
    }
    let mut stmt = stmts.pop()?;
    if any_projection
        && let Statement::Query(q) = &mut stmt
        && let SetExpr::Select(s) = q.body.as_mut()
    {
        s.projection = vec![SelectItem::Wildcard(WildcardAdditionalOptions::default())];
    }
    Some(stmt.to_string().replace(['`', '"'], "").to_lowercase())
}

fn unary_context(prev: &Token) -> bool {
    match prev {
        Token::Word(w) => w.quote_style.is_none() && w.keyword != sqlparser::keywords::Keyword::NoKeyword,
        Token::RParen | Token::Placeholder(_) | Token::Number(..) => false,
        t if super::lex::is_literal_token(t) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(sql: &str) -> (Vec<Tok>, bool) {
        let toks = lex(sql, Modes::default()).unwrap();
        match lock_clause::find(&toks) {
            LockClause::Trailing { first, end, .. } => (toks[..first].iter().chain(&toks[end..]).cloned().collect(), true),
            _ => (toks, false),
        }
    }

    fn m(pattern: &str, sql: &str) -> bool {
        let p = StatementPattern::parse(pattern).unwrap();
        let (b, l) = body(sql);
        p.matches(&b, l)
    }

    #[test]
    fn literals_spacing_case_quotes_do_not_matter() {
        let p = "SELECT ... FROM users WHERE users.id = ? FOR UPDATE";
        assert!(m(p, "SELECT users.id, users.balance \nFROM users \nWHERE users.id = 8 FOR UPDATE"));
        assert!(m(p, "select * from `users` where `users`.`id` = '8' /* c */ for update skip locked"));
        assert!(!m(p, "SELECT * FROM users WHERE users.id = 8"), "not locking");
        assert!(!m(p, "SELECT * FROM users WHERE users.id = 8 AND 1 FOR UPDATE"));
        let u = "UPDATE users SET frozen_balance = ?, updated_at = now() WHERE users.id = ?";
        assert!(m(u, "UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8"));
        assert!(m(u, "UPDATE users SET frozen_balance=-12.5, updated_at=NOW() WHERE users.id = 8"));
        assert!(!m(u, "UPDATE users SET frozen_balance=frozen_balance+1, updated_at=now() WHERE users.id = 8"));
        assert!(!m("SELECT id FROM users WHERE id = ? FOR UPDATE", "SELECT balance FROM users WHERE id = 1 FOR UPDATE"));
    }

    #[test]
    fn bad_patterns() {
        assert!(StatementPattern::parse("SELEKT 1").is_err());
        assert!(StatementPattern::parse("DELETE FROM users WHERE id = ?").is_err());
        assert!(StatementPattern::parse("SELECT 1; SELECT 2").is_err());
    }
}
