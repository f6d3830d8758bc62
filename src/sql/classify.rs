//! Classify one COM_QUERY text for the protection window's allow-list.
//! Anything this module cannot prove the shape of is `Unknown`: the gate
//! then validates before sending it.
use super::functions::calls_maybe_stored;
use crate::rules::lex::{LexError, Modes, Tok, lex};
use crate::rules::lock_clause::{self, LockClause};
use crate::rules::plan::parse_one;
use sqlparser::ast::{Expr, ObjectName, OnInsert, SetExpr, Statement, TableFactor, TableObject, visit_expressions, visit_relations};
use sqlparser::tokenizer::Token;
use std::ops::ControlFlow;

/// A table (or view) a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: Option<String>,
    pub name: String,
}

impl Relation {
    fn of(name: &ObjectName) -> Option<Relation> {
        let parts: Vec<&str> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.as_str()).collect();
        match parts.as_slice() {
            [t] => Some(Relation { schema: None, name: t.to_string() }),
            [s, t] => Some(Relation { schema: Some(s.to_string()), name: t.to_string() }),
            _ => None,
        }
    }
}

/// A FROM item of a SELECT: a named table (with its alias) or something
/// derived (a subquery, a table function), which shows values without
/// their base table's provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub rel: Option<Relation>,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// INSERT ... VALUES (`values_only`) or INSERT ... SELECT.
    Insert {
        values_only: bool,
    },
    /// INSERT ... ON DUPLICATE KEY UPDATE.
    Upsert,
    Replace,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// SELECT (`locking`: with a lock clause).
    Read {
        locking: bool,
    },
    Write {
        target: Relation,
        kind: WriteKind,
    },
    /// BEGIN, COMMIT, ROLLBACK, savepoints.
    Transaction,
    /// SET of variables to plain values, SHOW, USE, DESCRIBE, EXPLAIN.
    Session,
    /// DDL and LOCK TABLES: the server commits the transaction first.
    ImplicitCommit,
    Unknown(&'static str),
}

#[derive(Debug, Clone)]
pub struct Classified {
    pub shape: Shape,
    /// Every table or view name the statement mentions, subqueries included.
    pub relations: Vec<Relation>,
    /// For reads: the outer FROM items.
    pub factors: Vec<Factor>,
    /// For reads: the outer projection is plain columns and wildcards (or
    /// expressions that name no column), and the query is one SELECT.
    pub plain_projection: bool,
    /// The parsed statement (lock clause cut), when it parsed.
    pub stmt: Option<Statement>,
}

impl Classified {
    fn unknown(why: &'static str) -> Classified {
        Classified { shape: Shape::Unknown(why), relations: Vec::new(), factors: Vec::new(), plain_projection: false, stmt: None }
    }

    /// The statement may show or change rows of a table named `name`.
    pub fn mentions(&self, name: &str) -> bool {
        self.relations.iter().any(|r| r.name.eq_ignore_ascii_case(name))
    }
}

pub fn classify(sql: &[u8], modes: Modes) -> Classified {
    let Ok(text) = std::str::from_utf8(sql) else { return Classified::unknown("statement bytes are not UTF-8") };
    let toks = match lex(text, modes) {
        Ok(t) => t,
        Err(LexError::ExecutableComment) => return Classified::unknown("executable comment"),
        Err(_) => return Classified::unknown("statement does not tokenize"),
    };
    let mut pieces = toks.split(|t| t.token == Token::SemiColon).filter(|p| p.iter().any(|t| !t.is_trivia()));
    let Some(body) = pieces.next() else { return Classified::unknown("empty statement") };
    if pieces.next().is_some() {
        return Classified::unknown("multi-statement text");
    }
    // Operators whose meaning depends on sql_mode: never guess.
    if body.iter().any(|t| matches!(t.token, Token::StringConcat | Token::Overlap | Token::ExclamationMark)) {
        return Classified::unknown("operator whose meaning depends on sql_mode (||, &&, !)");
    }
    // sqlparser ranks XOR above `=`, the server below AND: the tree is not the server's.
    if body.iter().any(|t| t.is_kw(sqlparser::keywords::Keyword::XOR)) {
        return Classified::unknown("XOR, which sqlparser and the server parse with different precedence");
    }
    if body.iter().any(|t| matches!(t.token, Token::Placeholder(_))) {
        return Classified::unknown("placeholder in statement text");
    }
    let lock = lock_clause::find(body);
    let cut: Vec<Tok> = match lock {
        LockClause::NotTrailing => return Classified::unknown("lock clause that does not end the statement"),
        LockClause::Trailing { first, end, .. } => body[..first].iter().chain(&body[end..]).cloned().collect(),
        LockClause::None => body.to_vec(),
    };
    let Some(stmt) = parse_one(&cut) else { return Classified::unknown("statement thaw cannot parse") };
    let mut relations = Vec::new();
    let _ = visit_relations(&stmt, |name| {
        if let Some(r) = Relation::of(name) {
            relations.push(r);
        }
        ControlFlow::<()>::Continue(())
    });
    let mut c = Classified { shape: Shape::Unknown("statement kind"), relations, factors: Vec::new(), plain_projection: false, stmt: None };
    if calls_maybe_stored(body, &stmt) {
        c.shape = Shape::Unknown("call of a function that may be stored (not a known built-in)");
        return c;
    }
    c.shape = shape(&stmt, lock.is_locking(), &mut c);
    c.stmt = Some(stmt);
    c
}

fn shape(stmt: &Statement, locking: bool, c: &mut Classified) -> Shape {
    match stmt {
        Statement::Query(q) => {
            if let SetExpr::Select(s) = q.body.as_ref() {
                if s.into.is_some() {
                    return Shape::Unknown("SELECT ... INTO");
                }
                c.plain_projection = q.with.is_none() && s.projection.iter().all(plain_item);
                for twj in &s.from {
                    for f in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
                        c.factors.push(match f {
                            TableFactor::Table { name, alias, args: None, .. } => {
                                Factor { rel: Relation::of(name), alias: alias.as_ref().map(|a| a.name.value.clone()) }
                            }
                            _ => Factor { rel: None, alias: None },
                        });
                    }
                }
            }
            Shape::Read { locking }
        }
        _ if locking => Shape::Unknown("lock clause on a statement that is not a SELECT"),
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &ins.table else { return Shape::Unknown("INSERT into a table function") };
            let Some(target) = Relation::of(name) else { return Shape::Unknown("INSERT target not understood") };
            let kind = if ins.replace_into {
                WriteKind::Replace
            } else if matches!(ins.on, Some(OnInsert::DuplicateKeyUpdate(_))) {
                WriteKind::Upsert
            } else if ins.on.is_some() {
                return Shape::Unknown("INSERT with an ON clause");
            } else {
                let values_only = ins.source.as_ref().is_some_and(|q| matches!(q.body.as_ref(), SetExpr::Values(_)));
                WriteKind::Insert { values_only }
            };
            Shape::Write { target, kind }
        }
        Statement::Update(u) => {
            if !u.table.joins.is_empty() || u.from.is_some() {
                return Shape::Unknown("multi-table UPDATE");
            }
            match &u.table.relation {
                TableFactor::Table { name, .. } => match Relation::of(name) {
                    Some(target) => Shape::Write { target, kind: WriteKind::Update },
                    None => Shape::Unknown("UPDATE target not understood"),
                },
                _ => Shape::Unknown("UPDATE of a derived table"),
            }
        }
        Statement::Delete(d) => {
            let tables = match &d.from {
                sqlparser::ast::FromTable::WithFromKeyword(t) | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
            };
            match (d.tables.is_empty(), tables.as_slice()) {
                (true, [one]) if one.joins.is_empty() => match &one.relation {
                    TableFactor::Table { name, .. } => match Relation::of(name) {
                        Some(target) => Shape::Write { target, kind: WriteKind::Delete },
                        None => Shape::Unknown("DELETE target not understood"),
                    },
                    _ => Shape::Unknown("DELETE of a derived table"),
                },
                _ => Shape::Unknown("multi-table DELETE"),
            }
        }
        Statement::StartTransaction { statements, .. } if statements.is_empty() => Shape::Transaction,
        Statement::Commit { end: false, .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Shape::Transaction,
        // Values were checked for stored functions above; a subquery reads a table.
        Statement::Set(_) if c.relations.is_empty() => Shape::Session,
        Statement::Set(_) => Shape::Unknown("SET with a subquery"),
        Statement::Use(_) | Statement::ExplainTable { .. } => Shape::Session,
        Statement::Explain { analyze: false, .. } => Shape::Session,
        s if is_show(s) => Shape::Session,
        Statement::CreateTable(t) if t.temporary => Shape::Unknown("CREATE TEMPORARY TABLE"),
        Statement::CreateTable(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. }
        | Statement::Truncate(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::LockTables { .. }
        | Statement::UnlockTables => Shape::ImplicitCommit,
        Statement::Call(_) => Shape::Unknown("CALL"),
        Statement::Execute { .. } => Shape::Unknown("EXECUTE"),
        Statement::Prepare { .. } => Shape::Unknown("PREPARE"),
        _ => Shape::Unknown("statement kind not on the allow-list"),
    }
}

fn is_show(s: &Statement) -> bool {
    let text = format!("{s}");
    text.len() >= 5 && text[..5].eq_ignore_ascii_case("SHOW ")
}

/// A projection item that shows a column as it is stored, or nothing of any
/// column.
fn plain_item(item: &sqlparser::ast::SelectItem) -> bool {
    use sqlparser::ast::SelectItem::*;
    match item {
        Wildcard(_) | QualifiedWildcard(..) => true,
        UnnamedExpr(e) | ExprWithAlias { expr: e, .. } | ExprWithAliases { expr: e, .. } => plain_expr(e),
    }
}

fn plain_expr(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        other => {
            // An expression naming no column shows nothing of a row.
            let mut names_column = false;
            let _ = visit_expressions(other, |x| {
                names_column |= matches!(x, Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Subquery(_) | Expr::Exists { .. });
                ControlFlow::<()>::Continue(())
            });
            !names_column
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(sql: &str) -> Shape {
        classify(sql.as_bytes(), Modes::default()).shape
    }

    #[test]
    fn allow_list_shapes() {
        assert_eq!(shape_of("SELECT * FROM users WHERE id = 8"), Shape::Read { locking: false });
        assert_eq!(shape_of("SELECT * FROM users WHERE id IN (8, 9) LOCK IN SHARE MODE"), Shape::Read { locking: true });
        assert!(matches!(shape_of("INSERT INTO logs (a) VALUES (1)"), Shape::Write { kind: WriteKind::Insert { values_only: true }, .. }));
        assert!(matches!(
            shape_of("INSERT INTO logs (a) SELECT balance FROM users"),
            Shape::Write { kind: WriteKind::Insert { values_only: false }, .. }
        ));
        assert!(matches!(
            shape_of("INSERT INTO users (id) VALUES (1) ON DUPLICATE KEY UPDATE balance = 0"),
            Shape::Write { kind: WriteKind::Upsert, .. }
        ));
        assert!(matches!(shape_of("REPLACE INTO users (id) VALUES (1)"), Shape::Write { kind: WriteKind::Replace, .. }));
        assert!(matches!(shape_of("DELETE FROM users WHERE id = 8"), Shape::Write { kind: WriteKind::Delete, .. }));
        assert_eq!(shape_of("COMMIT"), Shape::Transaction);
        assert_eq!(shape_of("SAVEPOINT a"), Shape::Transaction);
        assert_eq!(shape_of("SET @a = 1, @b = 'x'"), Shape::Session);
        assert_eq!(shape_of("SHOW WARNINGS"), Shape::Session);
        assert_eq!(shape_of("ALTER TABLE t ADD c INT"), Shape::ImplicitCommit);
    }

    #[test]
    fn unknown_shapes() {
        for sql in [
            "CALL credit(8)",
            "SELECT credit(8)",
            "SELECT 1; SELECT 2",
            "/*!UPDATE users SET balance = 0 */",
            "SELECT a || b FROM t",
            "SELECT balance FROM users WHERE id = 8 AND 0 XOR id = 9",
            "SET @a = (SELECT balance FROM users WHERE id = 8)",
            "SET STATEMENT max_statement_time=1 FOR UPDATE users SET balance = 0 WHERE id = 8",
            "EXECUTE IMMEDIATE 'UPDATE users SET balance = 0'",
            "PREPARE s FROM 'UPDATE users SET balance = 0'",
            "DO credit(8)",
            "SELECT balance FROM users WHERE id = 8 INTO @b",
            "UPDATE users u, logs l SET u.balance = 0 WHERE u.id = l.id",
        ] {
            assert!(matches!(shape_of(sql), Shape::Unknown(_)), "{sql}: {:?}", shape_of(sql));
        }
        assert!(matches!(classify(b"SELECT 1 -- \xe9", Modes::default()).shape, Shape::Unknown(_)));
    }

    #[test]
    fn read_facts() {
        let c = classify(
            b"SELECT u.id, u.balance, 1 AS one, NOW() FROM users u JOIN logs l ON l.user_id = u.id WHERE u.id IN (SELECT id FROM vips)",
            Modes::default(),
        );
        assert!(c.plain_projection);
        assert!(c.mentions("USERS") && c.mentions("vips") && c.mentions("logs"));
        assert_eq!(c.factors.len(), 2);
        assert_eq!(c.factors[0].alias.as_deref(), Some("u"));
        let c = classify(b"SELECT balance + 0 FROM users WHERE id = 8", Modes::default());
        assert!(!c.plain_projection);
        let c = classify(b"SELECT x.b FROM (SELECT balance AS b FROM users) x", Modes::default());
        assert!(c.factors[0].rel.is_none());
    }
}
