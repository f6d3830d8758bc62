//! Keyed locking reads: cut the lock clause, say what to capture.
use super::matching::*;
use super::*;
use crate::rules::config::TableRule;
use crate::rules::lex::Tok;
use crate::rules::splice::{Edit, apply};
use crate::rules::{Action, CaptureSpec, PlanContext, Rewrite, RuleSet};
use sqlparser::ast::{Expr, Select, SelectItem, SetExpr};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

// ---- locking reads -----------------------------------------------------------

/// The lock clause of a read: the bytes to cut, and whether it is a try-lock.
pub(super) struct LockCut {
    pub(super) cut: (usize, usize),
    /// NOWAIT or SKIP LOCKED.
    pub(super) try_lock: bool,
}

pub(super) fn plan_select<'r>(
    rules: &'r RuleSet,
    mentioned: &'r TableRule,
    sql: &str,
    body: &[Tok],
    q: &sqlparser::ast::Query,
    lock: LockCut,
    ctx: &PlanContext<'_>,
) -> Outcome<'r> {
    let not_simple = || unh(mentioned, "locking read that is not a single-table SELECT");
    let SetExpr::Select(s) = q.body.as_ref() else { return Err(not_simple()) };
    if q.with.is_some() || s.from.len() != 1 {
        return Err(not_simple());
    }
    let Some((name, alias)) = single_table(&s.from[0]) else { return Err(not_simple()) };
    let Some(rule) = last_ident(name).and_then(|t| rules.table(&t.value)) else {
        return Err(unh(mentioned, "locking read of another table that mentions a governed table"));
    };
    // NOWAIT and SKIP LOCKED are try-locks: "give up (or skip the row) if
    // another worker has it". Unlocked, two workers would both go on; only a
    // rule that says they are mere contention escapes removes them.
    if !rule.unlock || (lock.try_lock && !rule.unlock_try_locks) {
        return Ok(None);
    }
    if body.iter().filter(|t| t.is_kw(Keyword::SELECT)).count() != 1 {
        return Err(unh(rule, "locking read with a subquery"));
    }
    if s.into.is_some() {
        return Err(unh(rule, "locking read INTO variables"));
    }
    if body.iter().any(|t| matches!(t.token, Token::Placeholder(_))) {
        return Err(unh(rule, "locking read with parameters"));
    }
    let quals = qualifiers(name, alias);
    let Some(key) = s.selection.as_ref().and_then(|w| find_key(w, &rule.key, &quals)) else {
        return Err(unh(rule, format!("locking read without a top-level `{} = <literal>`", rule.key)));
    };
    if !pattern_ok(rule, body, true) {
        return Err(unh(rule, "locking read matches none of the rule's statement patterns"));
    }
    let mut notes = Vec::new();
    // Nothing to capture for a rule without balance or CAS columns.
    let capture = ctx.in_transaction.then(|| capture_spec(rule, s, &key, &mut notes)).filter(|c| !c.columns.is_empty());
    let new_sql = apply(sql, &[Edit::delete(lock.cut.0, lock.cut.1)]).map_err(|e| unh(rule, format!("internal: {e}")))?;
    Ok(Some(Rewrite {
        sql: new_sql,
        rule: rule.name.clone(),
        table: rule.table.clone(),
        action: Action::Unlock,
        fingerprint: String::new(),
        capture,
        violation: None,
        on_success: Vec::new(),
        notes,
        row: None,
        proven: true,
        deferrable: false,
        cas: false,
    }))
}

/// Result columns are reported by org_name, which is empty for an
/// expression; its alias then stands in. So a column whose name may be the
/// alias of an expression is not captured.
pub(super) fn capture_spec(rule: &TableRule, s: &Select, key: &KeyLit, notes: &mut Vec<String>) -> CaptureSpec {
    let mut poisoned: Vec<String> = Vec::new();
    for item in &s.projection {
        if let SelectItem::ExprWithAlias { expr, alias } = item
            && !matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        {
            poisoned.push(alias.value.to_lowercase());
        }
    }
    let mut columns = Vec::new();
    for c in rule.balance_columns.iter().chain(&rule.cas_columns) {
        if poisoned.contains(c) {
            notes.push(format!("column {c} not captured: an expression is aliased to its name"));
        } else {
            columns.push(c.clone());
        }
    }
    CaptureSpec {
        table: rule.table.clone(),
        key_column: rule.key.clone(),
        key_literal: Some(key.value.clone()),
        key_from_row: !poisoned.contains(&rule.key),
        columns,
    }
}
