//! Keyed UPDATEs: guards from the invariants, deltas and CAS from the captures.
use super::literals::*;
use super::matching::*;
use super::*;
use crate::rules::captures::{ColMeta, RowId};
use crate::rules::config::{ColumnClass, TableRule, ViolationPolicy, render_message};
use crate::rules::decimal::Decimal;
use crate::rules::guard::quote_ident;
use crate::rules::lex::{Modes, OffsetConverter, Tok, depths, lex, sig_range};
use crate::rules::splice::{Edit, apply};
use crate::rules::{Action, CaptureUpdate, ErrorResponse, Plan, PlanContext, Rewrite, RuleSet, ViolationCheck, ViolationResponse};
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Spanned, Statement, Update,
    Value,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;
use std::ops::Range;

// ---- keyed UPDATE ----------------------------------------------------------------

/// Byte ranges of an UPDATE's parts, found on tokens.
pub(super) struct Layout {
    /// Table reference as written (`users`, `users u`, `` `db`.`users` AS u ``).
    table: (usize, usize),
    /// The WHERE expression.
    where_: (usize, usize),
    assigns: Vec<AssignLayout>,
}

pub(super) struct AssignLayout {
    /// Assignment target as written (`users.balance`).
    target: (usize, usize),
    /// Value expression as written.
    value: (usize, usize),
    /// Token indices of the value.
    value_toks: Range<usize>,
}

pub(super) fn layout(toks: &[Tok]) -> Option<Layout> {
    let depth = depths(toks);
    let sig = |from: usize, to: usize| (from..to).filter(|&i| !toks[i].is_trivia());
    let at0 = |i: &usize| depth[*i] == 0;
    let i_upd = sig(0, toks.len()).next().filter(|&i| toks[i].is_kw(Keyword::UPDATE))?;
    let i_set = sig(i_upd + 1, toks.len()).filter(at0).find(|&i| toks[i].is_kw(Keyword::SET))?;
    let i_where = sig(i_set + 1, toks.len()).filter(at0).find(|&i| toks[i].is_kw(Keyword::WHERE))?;
    let i_end = sig(i_where + 1, toks.len())
        .filter(at0)
        .find(|&i| toks[i].is_kw(Keyword::ORDER) || toks[i].is_kw(Keyword::LIMIT))
        .unwrap_or(toks.len());
    let mut table_toks = sig(i_upd + 1, i_set).peekable();
    while table_toks.next_if(|&i| toks[i].is_word_ci("LOW_PRIORITY") || toks[i].is_kw(Keyword::IGNORE)).is_some() {}
    let first = table_toks.next()?;
    let table = (toks[first].start, sig_range(&toks[first..i_set])?.1);
    let where_ = sig_range(&toks[i_where + 1..i_end])?;
    let mut assigns = Vec::new();
    let mut start = i_set + 1;
    for i in (i_set + 1)..=i_where {
        if i == i_where || (depth[i] == 0 && toks[i].token == Token::Comma) {
            let eq = (start..i).find(|&j| depth[j] == 0 && toks[j].token == Token::Eq)?;
            assigns.push(AssignLayout { target: sig_range(&toks[start..eq])?, value: sig_range(&toks[eq + 1..i])?, value_toks: eq + 1..i });
            start = i + 1;
        }
    }
    Some(Layout { table, where_, assigns })
}

/// Columns a value's tokens may read, lowercase: every word not followed by
/// `(`. Over-approximates on purpose (used to detect order dependence).
pub(super) fn word_refs(toks: &[Tok]) -> Vec<String> {
    let sig: Vec<&Tok> = toks.iter().filter(|t| !t.is_trivia()).collect();
    let mut out = Vec::new();
    for (k, t) in sig.iter().enumerate() {
        if let Token::Word(w) = &t.token
            && sig.get(k + 1).is_none_or(|n| n.token != Token::LParen)
        {
            out.push(w.value.to_lowercase());
        }
    }
    out
}

/// Functions whose result depends only on their arguments.
pub(super) const PURE_FUNCTIONS: &[&str] =
    &["abs", "ceil", "ceiling", "coalesce", "floor", "greatest", "if", "ifnull", "least", "mod", "nullif", "round", "sign", "truncate"];

/// Column references (lowercase name, identifier span) of a value that can be
/// evaluated again in a guard with the same result; Err names what cannot.
pub(super) fn pure_refs(e: &Expr, quals: &[String], out: &mut Vec<(String, sqlparser::tokenizer::Span)>) -> Result<(), String> {
    let mut rec = |x: &Expr| pure_refs(x, quals, out);
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            let Some(c) = column_of(e, quals) else { return Err(format!("`{e}` is not a column of the table")) };
            out.push((c, e.span()));
            Ok(())
        }
        Expr::Value(v) => match v.value {
            Value::Placeholder(_) => Err("a parameter".into()),
            _ => Ok(()),
        },
        Expr::BinaryOp { left, right, .. } => {
            rec(left)?;
            rec(right)
        }
        Expr::UnaryOp { expr, .. }
        | Expr::Nested(expr)
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr)
        | Expr::IsTrue(expr)
        | Expr::IsFalse(expr)
        | Expr::IsNotTrue(expr)
        | Expr::IsNotFalse(expr)
        | Expr::Cast { expr, .. } => rec(expr),
        Expr::Between { expr, low, high, .. } => {
            rec(expr)?;
            rec(low)?;
            rec(high)
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            if let Some(o) = operand {
                rec(o)?;
            }
            for w in conditions {
                rec(&w.condition)?;
                rec(&w.result)?;
            }
            if let Some(x) = else_result {
                rec(x)?;
            }
            Ok(())
        }
        Expr::Function(f) => {
            let name = match f.name.0.as_slice() {
                [p] => p.as_ident().map(|i| i.value.to_lowercase()),
                _ => None,
            };
            if !name.as_deref().is_some_and(|n| PURE_FUNCTIONS.contains(&n))
                || f.filter.is_some()
                || f.over.is_some()
                || !f.within_group.is_empty()
                || !matches!(f.parameters, FunctionArguments::None)
            {
                return Err(format!("function `{}`", f.name));
            }
            let FunctionArguments::List(list) = &f.args else { return Err(format!("function `{}`", f.name)) };
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(format!("function `{}`", f.name));
            }
            for a in &list.args {
                match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => rec(x)?,
                    _ => return Err(format!("function `{}`", f.name)),
                }
            }
            Ok(())
        }
        other => Err(expr_kind(other).to_string()),
    }
}

/// What an expression is, without its text: reasons end up in logs, and
/// an expression's text may carry literals (a card number in a LIKE).
fn expr_kind(e: &Expr) -> &'static str {
    match e {
        Expr::Subquery(_) | Expr::Exists { .. } => "a subquery",
        Expr::Like { .. } | Expr::ILike { .. } | Expr::SimilarTo { .. } | Expr::RLike { .. } => "a pattern match",
        Expr::Function(_) => "a function call",
        _ => "an expression thaw does not evaluate again",
    }
}

pub(super) fn plan_update<'r>(
    rules: &'r RuleSet,
    mentioned: &'r TableRule,
    sql: &str,
    toks: &[Tok],
    u: &Update,
    ctx: &PlanContext<'_>,
) -> Outcome<'r> {
    let modes = Modes { backslash_escapes: !ctx.no_backslash_escapes, ansi_quotes: ctx.ansi_quotes };
    let Some((name, alias)) = single_table(&u.table) else {
        return Err(unh(mentioned, "multi-table UPDATE"));
    };
    let Some(rule) = last_ident(name).and_then(|t| rules.table(&t.value)) else {
        // Another table's UPDATE that reads a governed table: its rows are
        // not written.
        return Ok(None);
    };
    if u.from.is_some() {
        return Err(unh(rule, "multi-table UPDATE"));
    }
    if u.returning.is_some() || u.output.is_some() || u.or.is_some() || u.on_cluster.is_some() || u.settings.is_some() {
        return Err(unh(rule, "UPDATE with a clause thaw does not rewrite"));
    }
    if toks.iter().any(|t| matches!(t.token, Token::Placeholder(_))) {
        return Err(unh(rule, "UPDATE with parameters"));
    }
    let quals = qualifiers(name, alias);
    let Some(key) = u.selection.as_ref().and_then(|w| find_key(w, &rule.key, &quals)) else {
        return Err(unh(rule, format!("UPDATE without a top-level `{} = <literal>`", rule.key)));
    };
    let mut cols: Vec<String> = Vec::with_capacity(u.assignments.len());
    for a in &u.assignments {
        let AssignmentTarget::ColumnName(target) = &a.target else {
            return Err(unh(rule, "UPDATE assigning a tuple"));
        };
        let parts: Vec<&Ident> = target.0.iter().filter_map(|p| p.as_ident()).collect();
        let col = match parts.as_slice() {
            [c] => c.value.to_lowercase(),
            [.., q, c] if quals.contains(&q.value.to_lowercase()) => c.value.to_lowercase(),
            _ => return Err(unh(rule, "UPDATE assigning a column of another table")),
        };
        if col == rule.key {
            return Err(unh(rule, "UPDATE assigning the key column"));
        }
        if cols.contains(&col) {
            return Err(unh(rule, "UPDATE assigning a column twice"));
        }
        cols.push(col);
    }
    if !pattern_ok(rule, toks, false) {
        return Err(unh(rule, "UPDATE matches none of the rule's statement patterns"));
    }
    let Some(lay) = layout(toks).filter(|l| l.assigns.len() == u.assignments.len()) else {
        return Err(unh(rule, "internal: UPDATE layout not understood"));
    };

    // Order dependence: MySQL evaluates SET left to right, MariaDB with
    // SIMULTANEOUS_ASSIGNMENT reads old values.
    let refs: Vec<Vec<String>> = lay.assigns.iter().map(|a| word_refs(&toks[a.value_toks.clone()])).collect();
    let reads_earlier = |i: usize| cols[..i].iter().any(|c| refs[i].contains(c));
    let order_dependent = (0..cols.len()).any(reads_earlier);
    if order_dependent && ctx.simultaneous_assignment.is_none() {
        return Err(unh(rule, "SET reads a column assigned earlier and SIMULTANEOUS_ASSIGNMENT is unknown"));
    }
    let left_to_right = ctx.simultaneous_assignment == Some(false);

    // Deltas and CAS checks from the captures. The row is found by schema
    // (as written, else the current database), table and key.
    // No database selected: an unqualified name fails on the server, and no
    // capture (filed under its real schema) matches "".
    let schema = last_schema(name).or(ctx.schema).unwrap_or_default().to_string();
    let table_name = last_ident(name).map(|i| i.value.clone()).unwrap_or_default();
    let id = ctx.captures.id(&schema, &table_name, &key.value);
    let captured_row = ctx.captures.get(&id);
    if captured_row.is_some_and(|r| r.uncertain) {
        return Err(unh(rule, "the app saw this row in a form thaw could not attribute"));
    }
    // A number compared with a string key matches '8', '08', '8.0': more
    // rows than the one captured.
    if captured_row.is_some_and(|r| !r.key_meta.is_exact_number() && r.key_meta != ColMeta::default() && key.numeric) {
        return Err(unh(rule, "a numeric literal compared with a string key"));
    }
    // LIMIT 0 writes nothing and locks nothing.
    if u.limit.as_ref().is_some_and(|l| literal_of(l).is_some_and(|v| v == Lit::Number("0".into()))) {
        return Ok(Some(pass(rule, sql, None, true)));
    }
    let mut edits: Vec<Edit> = Vec::new();
    let mut new_value: Vec<Option<String>> = vec![None; cols.len()];
    let mut checks: Vec<String> = Vec::new();
    let mut on_success: Vec<CaptureUpdate> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut delta = false;
    // Whether the OK is known in advance (see `Rewrite::deferrable`).
    let mut predictable = captured_row.is_some() && u.limit.is_none() && u.order_by.is_empty() && key_alone(u, &rule.key, &quals);
    let mut changes_row = false;
    for (i, col) in cols.iter().enumerate() {
        let Some(row) = captured_row else { continue };
        let class = rule.class_of(col);
        if class == ColumnClass::LastWriterWins {
            predictable &= is_current_time(&u.assignments[i].value);
            continue;
        }
        let meta_of = row.meta.get(col).copied().unwrap_or_default();
        let set = |value: Option<String>| CaptureUpdate::Set {
            schema: schema.clone(),
            table: table_name.clone(),
            key: key.value.clone(),
            column: col.clone(),
            value,
        };
        let forget =
            || CaptureUpdate::Forget { schema: schema.clone(), table: table_name.clone(), key: key.value.clone(), column: col.clone() };
        let relative = refs[i].contains(col);
        let Some(captured) = row.values.get(col) else {
            if relative {
                notes.push(format!("{col} written relative to itself without a captured value"));
                continue;
            }
            // The lock on this row was removed and the read did not return this
            // column: an absolute write could overwrite a concurrent change.
            return Err(unh(rule, format!("absolute write of {col} after an unlocked read that did not return it")));
        };
        let meta = row.meta.get(col).copied().unwrap_or_default();
        let captured_text = captured.as_deref().and_then(|b| std::str::from_utf8(b).ok());
        let a = &lay.assigns[i];
        let target_sql = &sql[a.target.0..a.target.1];
        let lit = literal_of(&u.assignments[i].value);
        if relative {
            // `col = col ± n` keeps the capture exact; any other expression of
            // itself leaves it unknown, which a row in the window cannot afford.
            match (step_of(&u.assignments[i].value, col, &quals), captured_text.and_then(Decimal::parse)) {
                (Some(step), Some(old)) => {
                    let new = old.add(&step);
                    predictable &= class == ColumnClass::Balance && stored_exactly(&new, &meta_of);
                    changes_row |= !step.is_zero();
                    on_success.push(match stored(&new, &meta) {
                        Some(v) => set(Some(v)),
                        None => forget(),
                    })
                }
                _ if row.in_window() => return Err(unh(rule, format!("{col} written relative to itself in a form thaw cannot follow"))),
                _ => on_success.push(forget()),
            }
            continue;
        }
        // `9.965e2` is a DOUBLE: its stored form depends on the column.
        let approximate = matches!(&lit, Some(Lit::Number(n)) if is_approximate(n));
        let written: Option<Option<String>> = match &lit {
            Some(Lit::Number(_)) if approximate => None,
            Some(Lit::Number(n)) => Some(Some(n.clone())),
            Some(Lit::Str(s)) => Some(Some(s.clone())),
            Some(Lit::Null) => Some(None),
            None => None,
        };
        let new_num = match &lit {
            Some(Lit::Number(n)) | Some(Lit::Str(n)) => Decimal::parse(n),
            _ => None,
        };
        let old_num = captured_text.and_then(Decimal::parse);
        if class == ColumnClass::Balance
            && let (Some(new), Some(old)) = (&new_num, &old_num)
        {
            // A double stored into an integer column is rounded half to even
            // (rint); into a DECIMAL it is its shortest digits, rounded as
            // any value: the delta is to what the server will store.
            let new = &if approximate && meta.is_exact_number() && !meta.is_decimal() { new.round_half_even() } else { new.clone() };
            let d = new.sub(old);
            predictable &= !approximate && stored_exactly(new, &meta_of);
            changes_row |= !d.is_zero();
            let expr = if d.is_negative() { format!("{target_sql} - {}", d.abs()) } else { format!("{target_sql} + {d}") };
            edits.push(Edit::replace(a.value.0, a.value.1, expr.clone()));
            new_value[i] = Some(expr);
            on_success.push(match stored(new, &meta) {
                Some(v) => set(Some(v)),
                None => forget(),
            });
            delta = true;
            continue;
        }
        // CAS columns, and absolute balance writes that cannot be made
        // relative (NULL captured, an expression, not a number): the row
        // must still hold what the app saw.
        predictable = false;
        match cas_condition(target_sql, captured.as_deref(), &meta) {
            Some(c) => checks.push(c),
            None => return Err(unh(rule, format!("{col}: the captured value cannot be compared exactly through a literal"))),
        }
        // What the column stores: a number into an integer or DECIMAL column
        // as stored() says; NULL. A string is stored as the column's type,
        // length, character set and sql_mode make it (cut to the length
        // without strict mode, an ENUM's own spelling, `?` for a character
        // the column cannot hold): not known, so the capture forgets it.
        // Unknown metadata (explain, tests): the literal as written.
        let unknown_meta = meta == ColMeta::default();
        on_success.push(match (&lit, written) {
            (_, Some(None)) => set(None),
            (_, Some(v)) if unknown_meta => set(v),
            (Some(Lit::Number(_)), Some(Some(n))) if meta.is_exact_number() => match Decimal::parse(&n).and_then(|d| stored(&d, &meta)) {
                Some(v) => set(Some(v)),
                None => forget(),
            },
            _ => forget(),
        });
    }
    let cas_checks = checks.clone();

    // The guard: invariants that mention an assigned column, evaluated on
    // the row after the update. Invariants over unassigned columns only are
    // left out: this UPDATE cannot break them, and adding them would refuse
    // updates of rows that were already out of bounds.
    let needed: Vec<usize> = (0..cols.len()).filter(|&i| rule.invariants.iter().any(|inv| inv.mentions(&cols[i]))).collect();
    let mut after: Vec<Option<String>> = vec![None; cols.len()];
    for &i in &needed {
        let text = after_value(i, sql, u, &lay, &cols, &quals, &new_value, left_to_right, &mut after)
            .map_err(|m| unh(rule, format!("SET value of invariant column {} is not a plain expression: {m}", cols[i])))?;
        after[i] = Some(text);
    }
    let mut guard_parts: Vec<String> = Vec::new();
    for inv in &rule.invariants {
        if !cols.iter().any(|c| inv.mentions(c)) {
            continue;
        }
        let rendered = inv.render(&mut |c| match cols.iter().position(|x| x == c) {
            Some(i) => format!("({})", after[i].as_deref().unwrap_or_default()),
            None => quote_ident(c),
        });
        guard_parts.push(format!("({rendered})"));
    }
    guard_parts.extend(checks.into_iter().map(|c| format!("({c})")));
    let row = captured_row.map(|_| id.clone());
    if guard_parts.is_empty() && edits.is_empty() && on_success.is_empty() {
        return Ok(Some(pass(rule, sql, row.clone(), row.is_some())));
    }
    let mut violation = None;
    if !guard_parts.is_empty() {
        edits.push(Edit::insert(lay.where_.0, "("));
        edits.push(Edit::insert(lay.where_.1, format!(") AND {}", guard_parts.join(" AND "))));
        violation = Some(violation_check(rule, sql, &lay, &key, &cas_checks));
    }
    let guarded = violation.is_some();
    let new_sql = apply(sql, &edits).map_err(|e| unh(rule, format!("internal: {e}")))?;
    verify_update(&new_sql, u, modes, !guard_parts.is_empty())
        .map_err(|m| unh(rule, format!("internal: rewritten UPDATE failed verification: {m}")))?;
    Ok(Some(Rewrite {
        sql: new_sql,
        rule: rule.name.clone(),
        table: rule.table.clone(),
        action: if delta { Action::Delta } else { Action::Guard },
        fingerprint: String::new(),
        capture: None,
        violation,
        on_success,
        notes,
        proven: row.is_some(),
        deferrable: predictable && changes_row && guarded,
        cas: !cas_checks.is_empty(),
        row,
    }))
}

/// A keyed UPDATE thaw sends as written: nothing to guard or make relative.
pub(super) fn pass(rule: &TableRule, sql: &str, row: Option<RowId>, proven: bool) -> Rewrite {
    Rewrite {
        sql: sql.to_string(),
        rule: rule.name.clone(),
        table: rule.table.clone(),
        action: Action::Pass,
        fingerprint: String::new(),
        capture: None,
        violation: None,
        on_success: Vec::new(),
        notes: Vec::new(),
        row,
        proven,
        deferrable: false,
        cas: false,
    }
}

/// The value a column stores for `v`: DECIMAL scale applied, integers
/// rounded (half away from zero, as the server stores `150.5` into BIGINT).
/// `None` for a type whose stored text thaw cannot predict (FLOAT, DOUBLE),
/// and for an integer out of its type's range (without strict mode the
/// server clamps it to the bound, with a warning) or a YEAR outside
/// 1901..2155 (two-digit years are read as 19xx/20xx).
fn stored(v: &Decimal, meta: &ColMeta) -> Option<String> {
    use crate::rules::captures::types::{DECIMAL, INT24, LONG, LONGLONG, NEWDECIMAL, SHORT, TINY, YEAR};
    if matches!(meta.col_type, DECIMAL | NEWDECIMAL) {
        let scale = u32::from(meta.decimals);
        let r = v.round_to(scale);
        if meta.length > 0 {
            // length = precision + the point (when scale > 0) + the sign
            // (when signed); a value past the precision is clamped without
            // strict mode.
            let precision = meta.length.saturating_sub(u32::from(scale > 0) + u32::from(!meta.unsigned()));
            let bound = Decimal::parse(&format!("1{}", "0".repeat(precision.saturating_sub(scale) as usize)))?;
            if (meta.unsigned() && r.is_negative()) || r.abs().cmp_value(&bound) != std::cmp::Ordering::Less {
                return None;
            }
        }
        Some(r.to_string())
    } else if meta.is_exact_number() {
        let r = v.round_to(0);
        let (lo, hi): (i128, i128) = match (meta.col_type, meta.unsigned()) {
            (TINY, false) => (-128, 127),
            (TINY, true) => (0, 255),
            (SHORT, false) => (-32768, 32767),
            (SHORT, true) => (0, 65535),
            (INT24, false) => (-8388608, 8388607),
            (INT24, true) => (0, 16777215),
            (LONG, false) => (i32::MIN.into(), i32::MAX.into()),
            (LONG, true) => (0, u32::MAX.into()),
            (LONGLONG, false) => (i64::MIN.into(), i64::MAX.into()),
            (LONGLONG, true) => (0, u64::MAX.into()),
            (YEAR, _) => (1901, 2155),
            _ => return None,
        };
        let within = |bound: i128, below: bool| {
            let b = Decimal::parse(&bound.to_string()).expect("an integer parses");
            r.cmp_value(&b) != if below { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater }
        };
        (within(lo, true) && within(hi, false)).then(|| r.to_string())
    } else if meta.is_inexact() {
        None
    } else {
        // Unknown metadata (explain, tests): the value as written.
        Some(v.to_string())
    }
}

/// A number literal with an exponent: an approximate value (DOUBLE).
fn is_approximate(n: &str) -> bool {
    n.contains(['e', 'E'])
}

/// The value is what the column stores, digit for digit (no rounding
/// warning); unknown metadata never is.
fn stored_exactly(v: &Decimal, meta: &ColMeta) -> bool {
    meta.is_exact_number() && stored(v, meta).and_then(|s| Decimal::parse(&s)).is_some_and(|s| s.normalized() == v.normalized())
}

/// NOW(), CURRENT_TIMESTAMP and friends: what a last-writer-wins column is
/// set to without a value the app read.
fn is_current_time(e: &Expr) -> bool {
    const NOW: &[&str] = &["now", "current_timestamp", "localtimestamp", "localtime", "utc_timestamp", "sysdate"];
    match e {
        Expr::Function(f) => {
            let name = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()).unwrap_or_default();
            let args_ok = match &f.args {
                FunctionArguments::None => true,
                FunctionArguments::List(l) => {
                    l.args.is_empty()
                        || l.args.len() == 1
                            && matches!(&l.args[0], FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) if matches!(v.value, Value::Number(..)))
                }
                FunctionArguments::Subquery(_) => false,
            };
            NOW.contains(&name.as_str()) && args_ok
        }
        Expr::Identifier(id) => id.quote_style.is_none() && NOW.contains(&id.value.to_lowercase().as_str()),
        _ => false,
    }
}

/// The WHERE is exactly `key = literal` (through parentheses).
fn key_alone(u: &Update, key: &str, quals: &[String]) -> bool {
    let Some(sel) = &u.selection else { return false };
    let mut cs = Vec::new();
    conjuncts(sel, &mut cs);
    cs.len() == 1 && find_key(sel, key, quals).is_some()
}

/// `col + n` / `col - n` (n a number literal): the step, signed.
pub(super) fn step_of(e: &Expr, col: &str, quals: &[String]) -> Option<Decimal> {
    let Expr::BinaryOp { left, op, right } = e else { return None };
    if column_of(left, quals).as_deref() != Some(col) {
        return None;
    }
    // A quoted number is read as a number in arithmetic; `col - 3.5e0` is
    // computed in DOUBLE, which thaw does not follow.
    let (Some(Lit::Number(n)) | Some(Lit::Str(n))) = literal_of(right) else { return None };
    if matches!(literal_of(right), Some(Lit::Number(ref n)) if is_approximate(n)) {
        return None;
    }
    let d = Decimal::parse(&n)?;
    match op {
        BinaryOperator::Plus => Some(d),
        BinaryOperator::Minus => Some(Decimal::parse("0")?.sub(&d)),
        _ => None,
    }
}

pub(super) fn last_schema(name: &ObjectName) -> Option<&str> {
    let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    (parts.len() == 2).then(|| parts[0].value.as_str())
}

/// After-value text of assignment `i`: its (possibly delta-rewritten)
/// value, with earlier-assigned columns replaced by their own after-values
/// when SET is evaluated left to right.
#[allow(clippy::too_many_arguments)]
pub(super) fn after_value(
    i: usize,
    sql: &str,
    u: &Update,
    lay: &Layout,
    cols: &[String],
    quals: &[String],
    new_value: &[Option<String>],
    left_to_right: bool,
    memo: &mut Vec<Option<String>>,
) -> Result<String, String> {
    if let Some(t) = &memo[i] {
        return Ok(t.clone());
    }
    if let Some(t) = &new_value[i] {
        return Ok(t.clone());
    }
    let mut refs = Vec::new();
    pure_refs(&u.assignments[i].value, quals, &mut refs)?;
    let (vs, ve) = lay.assigns[i].value;
    let mut edits = Vec::new();
    if left_to_right {
        let mut conv = OffsetConverter::new(sql);
        for (c, span) in refs {
            let Some(j) = cols[..i].iter().position(|x| *x == c) else { continue };
            let (Some(s), Some(e)) = (conv.offset(span.start), conv.offset(span.end)) else {
                return Err("identifier location unknown".into());
            };
            if s < vs || e > ve {
                return Err("identifier outside its value".into());
            }
            let inner = after_value(j, sql, u, lay, cols, quals, new_value, left_to_right, memo)?;
            edits.push(Edit::replace(s - vs, e - vs, format!("({inner})")));
        }
    }
    let text = apply(&sql[vs..ve], &edits).map_err(|e| e.to_string())?;
    memo[i] = Some(text.clone());
    Ok(text)
}

pub(super) fn violation_check(rule: &TableRule, sql: &str, lay: &Layout, key: &KeyLit, cas: &[String]) -> ViolationCheck {
    let response = match &rule.violation {
        ViolationPolicy::PassThrough => ViolationResponse::PassThrough,
        ViolationPolicy::Error { code, sqlstate, message, rollback } => ViolationResponse::Error {
            error: ErrorResponse {
                code: *code,
                sqlstate: sqlstate.clone(),
                message: render_message(message, &rule.name, &rule.table, &key.value),
            },
            rollback: *rollback,
        },
    };
    ViolationCheck {
        rule: rule.name.clone(),
        table: rule.table.clone(),
        key: key.value.clone(),
        key_sql: key_sql(sql, lay, rule, key),
        response,
        exists_sql: format!(
            "SELECT {} FROM {} WHERE {} LOCK IN SHARE MODE",
            if cas.is_empty() {
                "1".to_string()
            } else {
                format!("({}) IS TRUE", cas.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" AND "))
            },
            &sql[lay.table.0..lay.table.1],
            &sql[lay.where_.0..lay.where_.1]
        ),
    }
}

/// The key literal as it is spelled in the WHERE (for messages and logs).
pub(super) fn key_sql(sql: &str, lay: &Layout, _rule: &TableRule, key: &KeyLit) -> String {
    // Cheap: the canonical value unless a quoted spelling is in the WHERE.
    let w = &sql[lay.where_.0..lay.where_.1];
    let quoted = format!("'{}'", key.value);
    if w.contains(&quoted) { quoted } else { key.value.clone() }
}

/// Re-parse the rewritten UPDATE: it must parse, keep its assignments, and
/// when guarded its WHERE must be the original one, parenthesized, ANDed
/// with the guard.
pub(super) fn verify_update(new_sql: &str, orig: &Update, modes: Modes, guarded: bool) -> Result<(), String> {
    let toks = lex(new_sql, modes).map_err(|e| e.to_string())?;
    let body: Vec<Tok> = toks.into_iter().filter(|t| t.token != Token::SemiColon).collect();
    let Some(Statement::Update(u)) = parse_one(&body) else { return Err("does not parse as one UPDATE".into()) };
    if u.assignments.len() != orig.assignments.len() || u.assignments.iter().zip(&orig.assignments).any(|(a, b)| a.target != b.target) {
        return Err("assignments changed".into());
    }
    if guarded {
        let mut left = u.selection.as_ref().ok_or("no WHERE")?;
        while let Expr::BinaryOp { left: l, op: BinaryOperator::And, .. } = left {
            if matches!(**l, Expr::Nested(_)) && l.to_string() == format!("({})", orig.selection.as_ref().ok_or("no WHERE")?) {
                return Ok(());
            }
            left = l;
        }
        return Err("original WHERE not found as the first conjunct".into());
    }
    Ok(())
}

pub(crate) fn sample_guarded_update(rules: &RuleSet, table: &str) -> Option<String> {
    let rule = rules.table(table)?;
    let cols: Vec<String> = rule.columns_referenced().into_iter().filter(|c| *c != rule.key).collect();
    let set = if cols.is_empty() {
        format!("{0} = {0}", quote_ident(&rule.key))
    } else {
        cols.iter().map(|c| format!("{0} = {0}", quote_ident(c))).collect::<Vec<_>>().join(", ")
    };
    let sql = format!("UPDATE {} SET {set} WHERE {} = 0", rule.table_sql(), quote_ident(&rule.key));
    let empty = crate::rules::Captures::default();
    let ctx = PlanContext {
        no_backslash_escapes: false,
        ansi_quotes: false,
        in_transaction: true,
        simultaneous_assignment: Some(false),
        captures: &empty,
        schema: None,
    };
    Some(match plan(rules, &sql, &ctx) {
        Plan::Rewrite(rw) => rw.sql,
        _ => sql,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::captures::types::{LONG, LONGLONG, NEWDECIMAL, YEAR};

    fn meta(col_type: u8, unsigned: bool) -> ColMeta {
        ColMeta { col_type, decimals: 0, charset: 63, flags: if unsigned { 0x20 } else { 0 }, length: 0 }
    }

    #[test]
    fn stored_values_within_the_type_range_only() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert_eq!(stored(&d("2147483647"), &meta(LONG, false)).as_deref(), Some("2147483647"));
        assert_eq!(stored(&d("2147483648"), &meta(LONG, false)), None, "clamped without strict mode");
        assert_eq!(stored(&d("2147483648"), &meta(LONG, true)).as_deref(), Some("2147483648"));
        assert_eq!(stored(&d("-1"), &meta(LONGLONG, true)), None);
        assert_eq!(stored(&d("-9223372036854775808"), &meta(LONGLONG, false)).as_deref(), Some("-9223372036854775808"));
        assert_eq!(stored(&d("150.5"), &meta(LONGLONG, false)).as_deref(), Some("151"));
        assert_eq!(stored(&d("50"), &meta(YEAR, false)), None, "a two-digit year");
        assert_eq!(stored(&d("1.005"), &ColMeta { decimals: 2, ..meta(NEWDECIMAL, false) }).as_deref(), Some("1.01"));
        // DECIMAL(6,2): length 8 signed, 7 unsigned.
        let dec62 = ColMeta { decimals: 2, length: 8, ..meta(NEWDECIMAL, false) };
        assert_eq!(stored(&d("9999.994"), &dec62).as_deref(), Some("9999.99"));
        assert_eq!(stored(&d("9999.995"), &dec62), None, "rounds to 10000.00: clamped");
        assert_eq!(stored(&d("-9999.99"), &dec62).as_deref(), Some("-9999.99"));
        assert_eq!(stored(&d("-1"), &ColMeta { decimals: 2, length: 7, ..meta(NEWDECIMAL, true) }), None);
    }
}
