//! Result rows of an explained statement as the server would send them:
//! column definitions (schema, table alias, org_table, org_name, type) and
//! text rows, fed to the session's own capture sink. The origin of each
//! column comes from the statement: a name the projection shows plainly
//! (`users.balance`, `balance AS b`, `*`) is that table's column; anything
//! else is an expression, which no server ties to a row either.
use super::input::{Row, Value};
use crate::rules::ColMeta;
use crate::rules::column_types as types;
use crate::sql::{Classified, Factor, Shape};
use crate::wire::packets::put_lenenc_str;
use sqlparser::ast::{Expr, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement};

/// Where a result column came from; empty table for an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub schema: String,
    pub alias: String,
    pub table: String,
    pub column: String,
}

/// The origin of result column `name` of a statement `class`; `fallback`
/// is the table of a read thaw unlocked, for a statement thaw cannot parse.
pub fn origin(class: &Classified, schema: Option<&str>, fallback: Option<&str>, name: &str) -> Origin {
    let expr = || Origin { schema: String::new(), alias: String::new(), table: String::new(), column: String::new() };
    let of = |f: &Factor, column: &str| {
        let rel = f.rel.as_ref()?;
        let schema = rel.schema.as_deref().or(schema).unwrap_or_default().to_string();
        Some(Origin { schema, alias: f.alias.clone().unwrap_or_else(|| rel.name.clone()), table: rel.name.clone(), column: column.into() })
    };
    let named = |q: &str| {
        class.factors.iter().find(|f| {
            f.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(q)) || f.rel.as_ref().is_some_and(|r| r.name.eq_ignore_ascii_case(q))
        })
    };
    let single = || match class.factors.as_slice() {
        [f] => Some(f),
        _ => None,
    };
    let table_only = |table: &str, column: &str| Origin {
        schema: schema.unwrap_or_default().to_string(),
        alias: table.to_string(),
        table: table.to_string(),
        column: column.to_string(),
    };
    // A name the rows annotation qualified itself.
    if let Some((q, c)) = name.rsplit_once('.') {
        return named(q).and_then(|f| of(f, c)).unwrap_or_else(expr);
    }
    match (&class.shape, &class.stmt) {
        (Shape::Read { .. }, Some(Statement::Query(q))) => {
            let SetExpr::Select(s) = q.body.as_ref() else { return expr() };
            for item in &s.projection {
                let (e, shown) = match item {
                    SelectItem::UnnamedExpr(e) => (e, None),
                    SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.as_str())),
                    SelectItem::Wildcard(_) => return single().and_then(|f| of(f, name)).unwrap_or_else(expr),
                    SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(q), _) => {
                        let q = q.0.last().and_then(|p| p.as_ident()).map(|i| i.value.as_str()).unwrap_or_default();
                        match named(q).and_then(|f| of(f, name)) {
                            Some(o) => return o,
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                let (factor, column) = match e {
                    Expr::Identifier(i) => (single(), i.value.as_str()),
                    Expr::CompoundIdentifier(p) if p.len() >= 2 => (named(&p[p.len() - 2].value), p[p.len() - 1].value.as_str()),
                    _ => {
                        if shown.is_some_and(|a| a.eq_ignore_ascii_case(name)) {
                            return expr();
                        }
                        continue;
                    }
                };
                if shown.unwrap_or(column).eq_ignore_ascii_case(name) {
                    return factor.and_then(|f| of(f, column)).unwrap_or_else(expr);
                }
            }
            expr()
        }
        // RETURNING shows the written table's columns.
        (Shape::Write { target, .. }, _) => table_only(&target.name, name),
        _ => fallback.map(|t| table_only(t, name)).unwrap_or_else(expr),
    }
}

/// Type of a column from the values the rows show for it.
pub fn meta(values: &[&Value]) -> ColMeta {
    let utf8mb4 = ColMeta { col_type: 0xfd, decimals: 0, charset: 45, flags: 0, length: 0 };
    match values.iter().find(|v| **v != &Value::Null) {
        Some(Value::Number(n)) if n.contains(['e', 'E']) => {
            ColMeta { col_type: types::DOUBLE, decimals: 31, charset: 63, flags: 0, length: 0 }
        }
        Some(Value::Number(n)) => match n.split_once('.') {
            Some((_, frac)) => {
                ColMeta { col_type: types::NEWDECIMAL, decimals: frac.len().min(30) as u8, charset: 63, flags: 0, length: 0 }
            }
            None => ColMeta { col_type: types::LONGLONG, decimals: 0, charset: 63, flags: 0, length: 0 },
        },
        _ => utf8mb4,
    }
}

/// A column definition packet (protocol 4.1) for `origin` named `name`.
pub fn column_def(o: &Origin, name: &str, m: ColMeta) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["def", &o.schema, &o.alias, &o.table, name, &o.column] {
        put_lenenc_str(&mut p, s.as_bytes());
    }
    p.push(0x0c);
    p.extend_from_slice(&m.charset.to_le_bytes());
    p.extend_from_slice(&[0xff, 0, 0, 0, m.col_type]);
    p.extend_from_slice(&m.flags.to_le_bytes());
    p.extend_from_slice(&[m.decimals, 0, 0]);
    p
}

/// A text-protocol row of `columns`; a column the row does not name is NULL.
pub fn row_packet(columns: &[String], row: &Row) -> Vec<u8> {
    let mut p = Vec::new();
    for c in columns {
        match row.iter().find(|(n, _)| n == c).and_then(|(_, v)| v.text()) {
            Some(t) => put_lenenc_str(&mut p, t.as_bytes()),
            None => p.push(0xfb),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::lex::Modes;
    use crate::sql::classify;

    fn o(sql: &str, name: &str) -> (String, String, String) {
        let c = classify(sql.as_bytes(), Modes::default());
        let o = origin(&c, Some("db"), None, name);
        (o.alias, o.table, o.column)
    }

    fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    #[test]
    fn columns_are_tied_to_their_table_as_the_server_would() {
        assert_eq!(o("SELECT users.id, users.balance FROM users WHERE users.id = 8", "balance"), t("users", "users", "balance"));
        assert_eq!(o("SELECT * FROM users u WHERE u.id = 8", "balance"), t("u", "users", "balance"));
        assert_eq!(o("SELECT balance AS b FROM users", "b"), t("users", "users", "balance"));
        assert_eq!(o("SELECT balance + 0 AS b FROM users", "b"), t("", "", ""));
        assert_eq!(o("SELECT a.balance, b.balance FROM users a JOIN users b ON a.id = b.id", "b.balance"), t("b", "users", "balance"));
        assert_eq!(o("SELECT a.*, l.id FROM users a JOIN logs l ON l.uid = a.id", "balance"), t("a", "users", "balance"));
        assert_eq!(o("SELECT id FROM users a JOIN logs l ON l.uid = a.id", "id"), t("", "", ""), "ambiguous without a qualifier");
        assert_eq!(o("INSERT INTO logs (a) VALUES (1) RETURNING logs.id", "id").1, "logs");
        let c = classify(b"SELECT balance FROM users WHERE id = 8 PROCEDURE x()", Modes::default());
        assert_eq!(origin(&c, None, Some("users"), "balance").table, "users");
    }

    #[test]
    fn types_follow_the_values() {
        let n = |s: &str| Value::Number(s.into());
        assert_eq!(meta(&[&Value::Null, &n("616.00")]).decimals, 2);
        assert_eq!(meta(&[&n("616")]).col_type, types::LONGLONG);
        assert!(meta(&[&n("1e3")]).is_inexact());
        assert_eq!(meta(&[&Value::Text("x".into())]).col_type, 0xfd);
        let def = column_def(
            &Origin { schema: "db".into(), alias: "u".into(), table: "users".into(), column: "id".into() },
            "id",
            meta(&[&n("8")]),
        );
        assert_eq!(def[def.len() - 13], 0x0c);
        let cols = ["id".to_string(), "x".to_string()];
        assert_eq!(row_packet(&cols, &vec![("id".into(), n("8"))]), vec![1, b'8', 0xfb]);
    }
}
