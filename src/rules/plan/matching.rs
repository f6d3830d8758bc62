//! Tables, keys and literals as the AST shows them.
use crate::rules::config::TableRule;
use crate::rules::decimal::canonical_number;
use crate::rules::lex::Tok;
use sqlparser::ast::{BinaryOperator, Expr, Ident, ObjectName, TableFactor, TableWithJoins, UnaryOperator, Value};

// ---- shared matching ---------------------------------------------------------

pub(super) fn last_ident(name: &ObjectName) -> Option<&Ident> {
    name.0.last().and_then(|p| p.as_ident())
}

/// The single table of a FROM / UPDATE target, with its alias.
pub(super) fn single_table(t: &TableWithJoins) -> Option<(&ObjectName, Option<&Ident>)> {
    if !t.joins.is_empty() {
        return None;
    }
    match &t.relation {
        TableFactor::Table { name, alias, args: None, .. } => Some((name, alias.as_ref().map(|a| &a.name))),
        _ => None,
    }
}

/// Names a column may be qualified with: the alias, else the table name.
pub(super) fn qualifiers(table: &ObjectName, alias: Option<&Ident>) -> Vec<String> {
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
pub(super) fn column_of(e: &Expr, quals: &[String]) -> Option<String> {
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
pub(super) fn literal_of(e: &Expr) -> Option<Lit> {
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
    pub(crate) value: String,
    /// Written as a number (not a quoted string).
    pub(crate) numeric: bool,
}

pub(super) fn key_text(l: &Lit) -> Option<String> {
    match l {
        Lit::Number(n) => canonical_number(n),
        Lit::Str(s) => Some(s.clone()),
        Lit::Null => None,
    }
}

/// Top-level conjuncts (through parentheses).
pub(super) fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
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
                    && let Some(l) = literal_of(lit)
                    && let Some(value) = key_text(&l)
                {
                    return Some(KeyLit { value, numeric: matches!(l, Lit::Number(_)) });
                }
            }
        }
    }
    None
}

pub(super) fn pattern_ok(rule: &TableRule, body: &[Tok], locking: bool) -> bool {
    rule.statements.is_empty() || rule.statements.iter().any(|p| p.matches(body, locking))
}
