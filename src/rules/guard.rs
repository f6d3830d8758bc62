//! Row invariants: validated at load, rendered into guards.
//!
//! An invariant is a SQL boolean expression over the governed table's
//! columns. Only a small grammar is accepted (columns, literals,
//! arithmetic, comparison, boolean operators, IS [NOT] NULL) so a guard can
//! never call a function, read another table or change with session state.
use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// One row invariant of a table rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Invariant {
    /// As written in the rule file.
    pub text: String,
    /// Columns it mentions, lowercase, in order of first mention.
    pub columns: Vec<String>,
    pub(crate) expr: InvExpr,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InvExpr {
    Column(String),
    /// Rendered SQL literal.
    Lit(String),
    Unary(&'static str, Box<InvExpr>),
    Binary(Box<InvExpr>, &'static str, Box<InvExpr>),
    Nested(Box<InvExpr>),
    IsNull(Box<InvExpr>, bool),
}

impl Invariant {
    /// Parse and validate `text` as an invariant of `table`.
    pub fn parse(text: &str, table: &str) -> Result<Invariant, String> {
        if text.contains('\\') {
            // A string's spelling would depend on NO_BACKSLASH_ESCAPES.
            return Err("invariants may not contain a backslash".into());
        }
        let dialect = MySqlDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| format!("invalid invariant: {e}"))?;
        let expr = parser.parse_expr().map_err(|e| format!("invalid invariant: {e}"))?;
        if parser.peek_token().token != Token::EOF {
            return Err(format!("invalid invariant: unexpected `{}` after the expression", parser.peek_token().token));
        }
        let inv = convert(&expr, table)?;
        if !inv.is_boolean() {
            return Err(format!("invariant `{}` is not a condition (use a comparison, AND/OR/NOT or IS NULL)", text.trim()));
        }
        let mut columns = Vec::new();
        inv.columns(&mut columns);
        if columns.is_empty() {
            return Err(format!("invariant `{}` mentions no column", text.trim()));
        }
        Ok(Invariant { text: text.trim().to_string(), columns, expr: inv })
    }

    pub fn mentions(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.eq_ignore_ascii_case(column))
    }

    /// Render with each column replaced by `col(name)` (lowercase name).
    pub(crate) fn render(&self, col: &mut dyn FnMut(&str) -> String) -> String {
        self.expr.render(col)
    }
}

fn convert(e: &Expr, table: &str) -> Result<InvExpr, String> {
    Ok(match e {
        // MySqlDialect reads `@var` as an identifier.
        Expr::Identifier(id) if id.quote_style.is_none() && (id.value.starts_with('@') || id.value.eq_ignore_ascii_case("default")) => {
            return Err(format!("`{}` is not allowed in an invariant", id.value));
        }
        Expr::Identifier(id) => InvExpr::Column(id.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            if !parts[0].value.eq_ignore_ascii_case(table) {
                return Err(format!("invariant column `{}` names another table than `{table}`", e));
            }
            InvExpr::Column(parts[1].value.to_lowercase())
        }
        Expr::Value(v) => InvExpr::Lit(match &v.value {
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                if s.chars().any(|c| c.is_control()) {
                    return Err("invariant string literals may not contain control characters".into());
                }
                format!("'{}'", s.replace('\'', "''"))
            }
            Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            Value::Null => "NULL".into(),
            other => return Err(format!("literal `{other}` is not allowed in an invariant")),
        }),
        Expr::Nested(inner) => InvExpr::Nested(Box::new(convert(inner, table)?)),
        Expr::IsNull(inner) => InvExpr::IsNull(Box::new(convert(inner, table)?), false),
        Expr::IsNotNull(inner) => InvExpr::IsNull(Box::new(convert(inner, table)?), true),
        Expr::UnaryOp { op, expr } => {
            let op = match op {
                UnaryOperator::Minus => "-",
                UnaryOperator::Plus => "+",
                UnaryOperator::Not => "NOT ",
                other => return Err(format!("operator `{other}` is not allowed in an invariant")),
            };
            InvExpr::Unary(op, Box::new(convert(expr, table)?))
        }
        Expr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Plus => "+",
                BinaryOperator::Minus => "-",
                BinaryOperator::Multiply => "*",
                BinaryOperator::Divide => "/",
                BinaryOperator::Modulo => "%",
                BinaryOperator::MyIntegerDivide => "DIV",
                BinaryOperator::Gt => ">",
                BinaryOperator::Lt => "<",
                BinaryOperator::GtEq => ">=",
                BinaryOperator::LtEq => "<=",
                BinaryOperator::Eq => "=",
                BinaryOperator::NotEq => "<>",
                BinaryOperator::Spaceship => "<=>",
                BinaryOperator::And => "AND",
                BinaryOperator::Or => "OR",
                BinaryOperator::Xor => "XOR",
                other => return Err(format!("operator `{other}` is not allowed in an invariant")),
            };
            InvExpr::Binary(Box::new(convert(left, table)?), op, Box::new(convert(right, table)?))
        }
        other => {
            return Err(format!(
                "`{other}` is not allowed in an invariant (only columns, literals, arithmetic, comparisons, AND/OR/NOT and IS NULL)"
            ));
        }
    })
}

impl InvExpr {
    fn is_boolean(&self) -> bool {
        match self {
            InvExpr::Nested(e) => e.is_boolean(),
            InvExpr::IsNull(..) => true,
            InvExpr::Unary(op, _) => *op == "NOT ",
            InvExpr::Binary(_, op, _) => matches!(*op, ">" | "<" | ">=" | "<=" | "=" | "<>" | "<=>" | "AND" | "OR" | "XOR"),
            _ => false,
        }
    }

    fn columns(&self, out: &mut Vec<String>) {
        match self {
            InvExpr::Column(c) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            InvExpr::Lit(_) => {}
            InvExpr::Unary(_, e) | InvExpr::Nested(e) | InvExpr::IsNull(e, _) => e.columns(out),
            InvExpr::Binary(l, _, r) => {
                l.columns(out);
                r.columns(out);
            }
        }
    }

    /// Explicit parentheses are kept as `Nested`, so printing the tree in
    /// order reproduces the parsed precedence.
    fn render(&self, col: &mut dyn FnMut(&str) -> String) -> String {
        match self {
            InvExpr::Column(c) => col(c),
            InvExpr::Lit(l) => l.clone(),
            InvExpr::Unary(op, e) => format!("{op}{}", e.render(col)),
            InvExpr::Binary(l, op, r) => format!("{} {op} {}", l.render(col), r.render(col)),
            InvExpr::Nested(e) => format!("({})", e.render(col)),
            InvExpr::IsNull(e, neg) => format!("{} IS {}NULL", e.render(col), if *neg { "NOT " } else { "" }),
        }
    }
}

/// A column name as SQL: bare when it is a plain identifier that is not a
/// keyword, backquoted otherwise.
pub fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && sqlparser::keywords::ALL_KEYWORDS.binary_search(&name.to_ascii_uppercase().as_str()).is_err();
    if plain { name.to_string() } else { format!("`{}`", name.replace('`', "``")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> String {
        Invariant::parse(text, "users").unwrap().render(&mut |c| quote_ident(c))
    }

    #[test]
    fn accepted_and_rendered() {
        assert_eq!(plain("balance - frozen_balance >= 0"), "balance - frozen_balance >= 0");
        assert_eq!(plain("users.balance - (frozen_balance + 1) >= -5"), "balance - (frozen_balance + 1) >= -5");
        assert_eq!(plain("NOT (a IS NULL) OR `b` <> 'x''y'"), "NOT (a IS NULL) OR b <> 'x''y'");
        assert_eq!(plain("status = 'ok' AND limit_ IS NOT NULL"), "`status` = 'ok' AND limit_ IS NOT NULL");
        let inv = Invariant::parse("balance - frozen_balance >= 0", "users").unwrap();
        assert_eq!(inv.columns, vec!["balance", "frozen_balance"]);
    }

    #[test]
    fn rejected() {
        for bad in [
            "balance >= (SELECT 1)",
            "ABS(balance) >= 0",
            "balance >= @limit",
            "balance >= DEFAULT",
            "other.balance >= 0",
            "balance + 1",
            "1 = 1",
            "balance >= 0 extra",
            "balance >= ?",
            "balance LIKE 'x%'",
            "balance >= 'a\\b'",
            "balance >=",
        ] {
            assert!(Invariant::parse(bad, "users").is_err(), "{bad}");
        }
    }

    #[test]
    fn substitution_parenthesizes() {
        let inv = Invariant::parse("balance - frozen_balance >= 0", "users").unwrap();
        let g = inv.render(&mut |c| if c == "frozen_balance" { "(frozen_balance + 616)".into() } else { c.into() });
        assert_eq!(g, "balance - (frozen_balance + 616) >= 0");
    }
}
