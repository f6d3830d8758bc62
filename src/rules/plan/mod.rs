//! The matcher and rewriter: decides what happens to one statement text.
//!
//! Everything is decided on the parsed statement; byte positions for the
//! edits come from tokens (sqlparser's expression spans leave out
//! parentheses and unary signs, so they are only used for identifiers,
//! which come straight from a token).
//!
//! Layout: `matching` (tables, keys, literals in the AST), `select`
//! (keyed locking reads), `update` (guards, deltas, CAS), `literals`
//! (values thaw writes into SQL).
mod literals;
mod matching;
mod select;
mod update;

pub(crate) use literals::hex_literal;
pub(crate) use matching::find_key;
use matching::*;
use select::plan_select;
use update::plan_update;
pub(crate) use update::sample_guarded_update;

use crate::rules::config::{TableRule, UnhandledPolicy};
use crate::rules::fingerprint::fingerprint_modes;
use crate::rules::lex::{LexError, Modes, Tok, lex};
use crate::rules::lock_clause::{self, LockClause};
use crate::rules::prefilter::contains_ci;
use crate::rules::{ErrorResponse, Plan, PlanContext, Rewrite, RuleSet};
use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};
use std::ops::Range;

pub(super) struct Unh<'r> {
    pub(super) rule: &'r TableRule,
    pub(super) reason: String,
}

pub(super) fn unh<'r>(rule: &'r TableRule, reason: impl Into<String>) -> Unh<'r> {
    Unh { rule, reason: reason.into() }
}

/// Ok(None): forward; Ok(Some): rewrite; Err: unhandled.
pub(super) type Outcome<'r> = Result<Option<Rewrite>, Unh<'r>>;

pub(crate) fn plan(rules: &RuleSet, sql: &str, ctx: &PlanContext<'_>) -> Plan {
    if !rules.is_candidate(sql) {
        return Plan::Forward;
    }
    let modes = Modes { backslash_escapes: !ctx.no_backslash_escapes, ansi_quotes: ctx.ansi_quotes };
    let fp = || fingerprint_modes(sql, modes);
    let toks = match lex(sql, modes) {
        Ok(t) => t,
        Err(LexError::ExecutableComment) => {
            let Some(rule) = rules.tables().find(|r| contains_ci(sql.as_bytes(), r.table.to_ascii_lowercase().as_bytes())) else {
                return Plan::Forward;
            };
            return unhandled(rule, fp(), "executable comment (/*! or /*M!) in the statement".into());
        }
        // Not valid SQL for the server either.
        Err(_) => return Plan::Forward,
    };
    let mut pieces: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.token == Token::SemiColon {
            pieces.push(start..i);
            start = i + 1;
        }
    }
    pieces.push(start..toks.len());
    pieces.retain(|r| toks[r.clone()].iter().any(|t| !t.is_trivia()));
    if pieces.len() == 1 {
        return match plan_one(rules, sql, &toks[pieces[0].clone()], ctx) {
            Ok(None) => Plan::Forward,
            Ok(Some(mut rw)) => {
                rw.fingerprint = fp();
                Plan::Rewrite(Box::new(rw))
            }
            Err(u) => unhandled(u.rule, fp(), u.reason),
        };
    }
    // Several statements: all or nothing, so never half a rewrite.
    for r in &pieces {
        match plan_one(rules, sql, &toks[r.clone()], ctx) {
            Ok(None) => continue,
            Ok(Some(rw)) => {
                let rule = rules.table(&rw.table).expect("rewrite names a rule table");
                return unhandled(rule, fp(), "multi-statement text with a statement that would be rewritten".into());
            }
            Err(u) => return unhandled(u.rule, fp(), format!("multi-statement text: {}", u.reason)),
        }
    }
    Plan::Forward
}

fn unhandled(rule: &TableRule, fingerprint: String, reason: String) -> Plan {
    match rule.unhandled {
        UnhandledPolicy::ForwardLog => Plan::Unhandled { table: rule.table.clone(), fingerprint, reason },
        UnhandledPolicy::Reject => Plan::Reject {
            table: rule.table.clone(),
            fingerprint,
            error: ErrorResponse {
                code: super::config::DEFAULT_CODE,
                sqlstate: super::config::DEFAULT_SQLSTATE.into(),
                message: format!(
                    "thaw: statement on table {} refused by rule {} (cannot be rewritten safely: {reason})",
                    rule.table, rule.name
                ),
            },
            reason,
        },
    }
}

pub(crate) fn parse_one(toks: &[Tok]) -> Option<Statement> {
    let v: Vec<TokenWithSpan> = toks.iter().map(|t| TokenWithSpan::new(t.token.clone(), t.span)).collect();
    let dialect = MySqlDialect {};
    let mut stmts = Parser::new(&dialect).with_tokens_with_locations(v).parse_statements().ok()?;
    if stmts.len() == 1 { stmts.pop() } else { None }
}

fn plan_one<'r>(rules: &'r RuleSet, sql: &str, toks: &[Tok], ctx: &PlanContext<'_>) -> Outcome<'r> {
    let mentioned =
        rules.tables().find(|r| toks.iter().any(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(&r.table))));
    let Some(mentioned) = mentioned else { return Ok(None) };
    // sqlparser and the server may read these differently (sql_mode): never guess.
    if toks.iter().any(|t| matches!(t.token, Token::StringConcat | Token::Overlap | Token::ExclamationMark)) {
        return Err(unh(mentioned, "operator whose meaning depends on sql_mode (||, &&, !)"));
    }
    // sqlparser ranks XOR above `=`; the server below AND (`a AND b XOR c`
    // is `(a AND b) XOR c`): the parsed tree would show a key conjunct the
    // server does not have.
    if toks.iter().any(|t| t.is_kw(Keyword::XOR)) {
        return Err(unh(mentioned, "XOR, which sqlparser and the server parse with different precedence"));
    }
    let lock = lock_clause::find(toks);
    let body: Vec<Tok> = match lock {
        LockClause::NotTrailing => return Err(unh(mentioned, "locking read whose lock clause does not end the statement")),
        LockClause::Trailing { first, end, .. } => toks[..first].iter().chain(&toks[end..]).cloned().collect(),
        LockClause::None => toks.to_vec(),
    };
    let Some(stmt) = parse_one(&body) else {
        // The server may well run it (sqlparser lacks e.g. MySQL's
        // comma-joined multi-table UPDATE): say so for locking reads and
        // UPDATEs, which may touch governed rows.
        let first = body.iter().find(|t| !t.is_trivia());
        return if lock.is_locking() {
            Err(unh(mentioned, "locking read that does not parse"))
        } else if first.is_some_and(|t| t.is_kw(Keyword::UPDATE)) {
            Err(unh(mentioned, "UPDATE that does not parse (multi-table?)"))
        } else {
            Ok(None)
        };
    };
    // A stored function may read or write any row, the window's included,
    // while the statement runs: nothing about it is proven.
    if crate::sql::calls_maybe_stored(toks, &stmt) {
        return Err(unh(mentioned, "call of a function that may be stored (not a known built-in)"));
    }
    match (&stmt, &lock) {
        (Statement::Query(q), LockClause::Trailing { first, end, cut_start, cut_end }) => {
            let try_lock = toks[*first..*end].iter().any(|t| t.is_kw(Keyword::NOWAIT) || t.is_kw(Keyword::SKIP));
            plan_select(rules, mentioned, sql, &body, q, select::LockCut { cut: (*cut_start, *cut_end), try_lock }, ctx)
        }
        (Statement::Update(u), LockClause::None) => plan_update(rules, mentioned, sql, toks, u, ctx),
        // An upsert into a governed table writes a row with no guard thaw can
        // add: unhandled, so the session refuses it after an unlocked read.
        (Statement::Insert(ins), LockClause::None)
            if ins.replace_into || matches!(ins.on, Some(sqlparser::ast::OnInsert::DuplicateKeyUpdate(_))) =>
        {
            let target = match &ins.table {
                sqlparser::ast::TableObject::TableName(name) => last_ident(name).and_then(|i| rules.table(&i.value)),
                _ => None,
            };
            match target {
                Some(rule) => Err(unh(rule, "INSERT ... ON DUPLICATE KEY UPDATE or REPLACE can overwrite a governed row without a guard")),
                None => Ok(None),
            }
        }
        (_, LockClause::None) => Ok(None),
        _ => Err(unh(mentioned, "locking statement that is not a plain SELECT")),
    }
}
