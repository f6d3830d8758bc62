//! The matcher and rewriter: decides what happens to one statement text.
//!
//! Everything is decided on the parsed statement; byte positions for the
//! edits come from tokens (sqlparser's expression spans leave out
//! parentheses and unary signs, so they are only used for identifiers,
//! which come straight from a token).
use super::captures::{ColMeta, RowId};
use super::config::{ColumnClass, TableRule, UnhandledPolicy, ViolationPolicy, render_message};
use super::decimal::{Decimal, canonical_number};
use super::fingerprint::fingerprint_modes;
use super::guard::quote_ident;
use super::lex::{LexError, Modes, OffsetConverter, Tok, depths, lex, sig_range};
use super::lock_clause::{self, LockClause};
use super::prefilter::contains_ci;
use super::splice::{Edit, apply};
use super::{Action, CaptureSpec, CaptureUpdate, ErrorResponse, Plan, PlanContext, Rewrite, RuleSet, ViolationCheck, ViolationResponse};
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Select, SelectItem,
    SetExpr, Spanned, Statement, TableFactor, TableWithJoins, UnaryOperator, Update, Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};
use std::ops::Range;

/// Why a statement on a governed table is left alone.
struct Unh<'r> {
    rule: &'r TableRule,
    reason: String,
}

fn unh<'r>(rule: &'r TableRule, reason: impl Into<String>) -> Unh<'r> {
    Unh { rule, reason: reason.into() }
}

/// Ok(None): forward; Ok(Some): rewrite; Err: unhandled.
type Outcome<'r> = Result<Option<Rewrite>, Unh<'r>>;

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
    match (&stmt, &lock) {
        (Statement::Query(q), LockClause::Trailing { cut_start, cut_end, .. }) => {
            plan_select(rules, mentioned, sql, &body, q, (*cut_start, *cut_end), ctx)
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

// ---- shared matching ---------------------------------------------------------

fn last_ident(name: &ObjectName) -> Option<&Ident> {
    name.0.last().and_then(|p| p.as_ident())
}

/// The single table of a FROM / UPDATE target, with its alias.
fn single_table(t: &TableWithJoins) -> Option<(&ObjectName, Option<&Ident>)> {
    if !t.joins.is_empty() {
        return None;
    }
    match &t.relation {
        TableFactor::Table { name, alias, args: None, .. } => Some((name, alias.as_ref().map(|a| &a.name))),
        _ => None,
    }
}

/// Names a column may be qualified with: the alias, else the table name.
fn qualifiers(table: &ObjectName, alias: Option<&Ident>) -> Vec<String> {
    let mut q = Vec::new();
    if let Some(a) = alias {
        q.push(a.value.to_lowercase());
    }
    if let Some(t) = last_ident(table) {
        q.push(t.value.to_lowercase());
    }
    q
}

/// A column of the target table referenced by `e`: lowercase name.
fn column_of(e: &Expr, quals: &[String]) -> Option<String> {
    match e {
        // MySqlDialect reads `@var`, `@@var` and `DEFAULT` as identifiers.
        Expr::Identifier(id) if id.quote_style.is_none() && (id.value.starts_with('@') || id.value.eq_ignore_ascii_case("default")) => None,
        Expr::Identifier(id) => Some(id.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 && parts.len() <= 3 => {
            let q = &parts[parts.len() - 2];
            quals.contains(&q.value.to_lowercase()).then(|| parts[parts.len() - 1].value.to_lowercase())
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Number(String),
    Str(String),
    Null,
}

/// A literal value, a signed number included.
fn literal_of(e: &Expr) -> Option<Lit> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(Lit::Number(n.clone())),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(Lit::Str(s.clone())),
            Value::Null => Some(Lit::Null),
            _ => None,
        },
        Expr::UnaryOp { op: op @ (UnaryOperator::Minus | UnaryOperator::Plus), expr } => match literal_of(expr)? {
            Lit::Number(n) if *op == UnaryOperator::Minus => Some(Lit::Number(format!("-{n}"))),
            Lit::Number(n) => Some(Lit::Number(n)),
            _ => None,
        },
        Expr::Nested(inner) => literal_of(inner),
        _ => None,
    }
}

/// The key value of a `key = literal` conjunct.
#[derive(Debug, Clone)]
pub(crate) struct KeyLit {
    /// Canonical text: numbers normalized, strings as is (what captures use).
    value: String,
}

fn key_text(l: &Lit) -> Option<String> {
    match l {
        Lit::Number(n) => canonical_number(n),
        Lit::Str(s) => Some(s.clone()),
        Lit::Null => None,
    }
}

/// Top-level conjuncts (through parentheses).
fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

pub(crate) fn find_key(selection: &Expr, key: &str, quals: &[String]) -> Option<KeyLit> {
    let mut cs = Vec::new();
    conjuncts(selection, &mut cs);
    for c in cs {
        if let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = c {
            for (col, lit) in [(left, right), (right, left)] {
                if column_of(col, quals).as_deref() == Some(key)
                    && let Some(value) = literal_of(lit).as_ref().and_then(key_text)
                {
                    return Some(KeyLit { value });
                }
            }
        }
    }
    None
}

fn pattern_ok(rule: &TableRule, body: &[Tok], locking: bool) -> bool {
    rule.statements.is_empty() || rule.statements.iter().any(|p| p.matches(body, locking))
}

// ---- locking reads -----------------------------------------------------------

fn plan_select<'r>(
    rules: &'r RuleSet,
    mentioned: &'r TableRule,
    sql: &str,
    body: &[Tok],
    q: &sqlparser::ast::Query,
    cut: (usize, usize),
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
    if !rule.unlock {
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
    let new_sql = apply(sql, &[Edit::delete(cut.0, cut.1)]).map_err(|e| unh(rule, format!("internal: {e}")))?;
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
    }))
}

/// Result columns are reported by org_name, which is empty for an
/// expression; its alias then stands in. So a column whose name may be the
/// alias of an expression is not captured.
fn capture_spec(rule: &TableRule, s: &Select, key: &KeyLit, notes: &mut Vec<String>) -> CaptureSpec {
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

// ---- keyed UPDATE ----------------------------------------------------------------

/// Byte ranges of an UPDATE's parts, found on tokens.
struct Layout {
    /// Table reference as written (`users`, `users u`, `` `db`.`users` AS u ``).
    table: (usize, usize),
    /// The WHERE expression.
    where_: (usize, usize),
    assigns: Vec<AssignLayout>,
}

struct AssignLayout {
    /// Assignment target as written (`users.balance`).
    target: (usize, usize),
    /// Value expression as written.
    value: (usize, usize),
    /// Token indices of the value.
    value_toks: Range<usize>,
}

fn layout(toks: &[Tok]) -> Option<Layout> {
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
fn word_refs(toks: &[Tok]) -> Vec<String> {
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
const PURE_FUNCTIONS: &[&str] =
    &["abs", "ceil", "ceiling", "coalesce", "floor", "greatest", "if", "ifnull", "least", "mod", "nullif", "round", "sign", "truncate"];

/// Column references (lowercase name, identifier span) of a value that can be
/// evaluated again in a guard with the same result; Err names what cannot.
fn pure_refs(e: &Expr, quals: &[String], out: &mut Vec<(String, sqlparser::tokenizer::Span)>) -> Result<(), String> {
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
        other => Err(format!("`{other}`")),
    }
}

/// `col = <last seen>`, written so that no connection character set can
/// change its meaning: exact numbers as bare ASCII numbers, everything else
/// as a hex literal with the character set the value was sent in.
pub(crate) fn cas_condition(col_sql: &str, v: Option<&[u8]>, meta: &ColMeta) -> Option<String> {
    let Some(v) = v else { return Some(format!("{col_sql} IS NULL")) };
    if meta.is_inexact() {
        return None;
    }
    if meta.is_exact_number() {
        let text = std::str::from_utf8(v).ok()?;
        return (Decimal::parse(text).is_some() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'.'))
            .then(|| format!("{col_sql} = {text}"));
    }
    Some(format!("{col_sql} = {}", hex_literal(v, meta.charset)?))
}

/// `_utf8mb4 X'..'`: a string literal no quoting rule or multi-byte
/// character set can reinterpret. Unknown character sets are refused.
pub(crate) fn hex_literal(v: &[u8], charset: u16) -> Option<String> {
    let name = charset_name(charset)?;
    let mut out = String::with_capacity(v.len() * 2 + 12);
    if name != "binary" {
        out.push('_');
        out.push_str(name);
        out.push(' ');
    }
    out.push_str("X'");
    for b in v {
        out.push_str(&format!("{b:02X}"));
    }
    out.push('\'');
    Some(out)
}

/// Character set of a collation id as column definitions report it (0:
/// unknown metadata, as in `thaw explain`, taken as utf8mb4).
fn charset_name(id: u16) -> Option<&'static str> {
    Some(match id {
        0 | 45 | 46 | 224..=247 | 255 | 2048..=2303 => "utf8mb4",
        33 | 83 | 192..=215 | 223 | 576..=579 | 1024..=1279 => "utf8mb3",
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => "latin1",
        11 | 65 => "ascii",
        63 => "binary",
        28 | 87 => "gbk",
        13 | 88 => "sjis",
        1 | 84 => "big5",
        95 | 96 => "cp932",
        24 | 86 => "gb2312",
        12 | 91 => "ujis",
        97 | 98 => "eucjpms",
        19 | 85 => "euckr",
        54 | 55 | 101..=124 | 608..=611 => "utf16",
        _ => return None,
    })
}

fn plan_update<'r>(
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
    for (i, col) in cols.iter().enumerate() {
        let Some(row) = captured_row else { continue };
        let class = rule.class_of(col);
        if class == ColumnClass::LastWriterWins {
            continue;
        }
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
                (Some(step), Some(old)) => on_success.push(set(Some(stored(&old.add(&step), &meta)))),
                _ if row.in_window() => return Err(unh(rule, format!("{col} written relative to itself in a form thaw cannot follow"))),
                _ => on_success.push(forget()),
            }
            continue;
        }
        let written: Option<Option<String>> = match &lit {
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
            let d = new.sub(old);
            let expr = if d.is_negative() { format!("{target_sql} - {}", d.abs()) } else { format!("{target_sql} + {d}") };
            edits.push(Edit::replace(a.value.0, a.value.1, expr.clone()));
            new_value[i] = Some(expr);
            on_success.push(set(Some(stored(new, &meta))));
            delta = true;
            continue;
        }
        // CAS columns, and absolute balance writes that cannot be made
        // relative (NULL captured, an expression, not a number): the row
        // must still hold what the app saw.
        match cas_condition(target_sql, captured.as_deref(), &meta) {
            Some(c) => checks.push(c),
            None => return Err(unh(rule, format!("{col}: the captured value cannot be compared exactly through a literal"))),
        }
        // The literal as written: `'007'` must stay `007` for a string column.
        on_success.push(match written {
            Some(v) => set(v),
            None => forget(),
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
        row,
    }))
}

/// A keyed UPDATE thaw sends as written: nothing to guard or make relative.
fn pass(rule: &TableRule, sql: &str, row: Option<RowId>, proven: bool) -> Rewrite {
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
    }
}

/// The value a column stores for `v`: DECIMAL scale applied.
fn stored(v: &Decimal, meta: &ColMeta) -> String {
    if matches!(meta.col_type, super::captures::types::DECIMAL | super::captures::types::NEWDECIMAL) {
        v.round_to(u32::from(meta.decimals)).to_string()
    } else {
        v.to_string()
    }
}

/// `col + n` / `col - n` (n a number literal): the step, signed.
fn step_of(e: &Expr, col: &str, quals: &[String]) -> Option<Decimal> {
    let Expr::BinaryOp { left, op, right } = e else { return None };
    if column_of(left, quals).as_deref() != Some(col) {
        return None;
    }
    // A quoted number is read as a number in arithmetic.
    let (Some(Lit::Number(n)) | Some(Lit::Str(n))) = literal_of(right) else { return None };
    let d = Decimal::parse(&n)?;
    match op {
        BinaryOperator::Plus => Some(d),
        BinaryOperator::Minus => Some(Decimal::parse("0")?.sub(&d)),
        _ => None,
    }
}

fn last_schema(name: &ObjectName) -> Option<&str> {
    let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    (parts.len() == 2).then(|| parts[0].value.as_str())
}

/// After-value text of assignment `i`: its (possibly delta-rewritten)
/// value, with earlier-assigned columns replaced by their own after-values
/// when SET is evaluated left to right.
#[allow(clippy::too_many_arguments)]
fn after_value(
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

fn violation_check(rule: &TableRule, sql: &str, lay: &Layout, key: &KeyLit, cas: &[String]) -> ViolationCheck {
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
fn key_sql(sql: &str, lay: &Layout, _rule: &TableRule, key: &KeyLit) -> String {
    // Cheap: the canonical value unless a quoted spelling is in the WHERE.
    let w = &sql[lay.where_.0..lay.where_.1];
    let quoted = format!("'{}'", key.value);
    if w.contains(&quoted) { quoted } else { key.value.clone() }
}

/// Re-parse the rewritten UPDATE: it must parse, keep its assignments, and
/// when guarded its WHERE must be the original one, parenthesized, ANDed
/// with the guard.
fn verify_update(new_sql: &str, orig: &Update, modes: Modes, guarded: bool) -> Result<(), String> {
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
    let empty = super::Captures::default();
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
