//! The protection window's allow-list: inside a transaction that holds
//! unprotected captured rows, a statement runs as sent only when it is
//! proven unable to read or change them behind thaw's back. Everything
//! else is validated first (re-lock the rows and compare; see
//! `session::validate`). This module decides; it runs nothing.
use super::plan::find_key;
use super::{Captures, Plan, Rewrite, RuleSet};
use crate::sql::{Classified, Shape, WriteKind};
use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement};

/// `None`: safe to send inside the window. `Some(reason)`: validate first.
pub fn window_gate(rules: &RuleSet, plan: &Plan, class: &Classified, captures: &Captures) -> Option<String> {
    if !captures.has_window() {
        return None;
    }
    match plan {
        Plan::Reject { .. } => return None,
        Plan::Rewrite(rw) if rw.proven => return None,
        Plan::Rewrite(_) => return Some("write of a governed row this transaction did not read".into()),
        Plan::Unhandled { reason, .. } => return Some(reason.clone()),
        Plan::Forward => {}
    }
    // Names (tables, views, trigger tables) through which the window's rows
    // can be seen or changed.
    let linked =
        |name: &str| rules.tables().any(|r| (r.table.eq_ignore_ascii_case(name) || r.links(name)) && captures.table_in_window(&r.table));
    let governed = |name: &str| rules.tables().any(|r| r.table.eq_ignore_ascii_case(name) || r.links(name));
    // A table whose rows are in the window (not a view or trigger table of one).
    let window_table = |name: &str| rules.table(name).is_some_and(|r| captures.table_in_window(&r.table));
    match &class.shape {
        Shape::Unknown(why) => Some((*why).to_string()),
        Shape::Transaction | Shape::Session | Shape::ImplicitCommit => None,
        Shape::Write { target, kind } => {
            if governed(&target.name) {
                let what = match kind {
                    WriteKind::Delete => "DELETE of",
                    WriteKind::Upsert | WriteKind::Replace => "upsert into",
                    WriteKind::Insert { .. } => "INSERT into",
                    WriteKind::Update => "UPDATE of",
                };
                Some(format!("{what} a governed table, a view or a trigger table ({})", target.name))
            } else if class.relations.iter().any(|r| linked(&r.name)) {
                Some("write that reads rows in the protection window".into())
            } else {
                // What it reads may be what the removed lock kept still.
                class
                    .relations
                    .iter()
                    .find(|r| !r.name.eq_ignore_ascii_case(&target.name))
                    .map(|r| format!("write that reads another table ({})", r.name))
            }
        }
        Shape::Read { .. } => {
            // The removed lock may have been what kept another table still (a
            // once-only check under the user's lock): only rows thaw tracks
            // are read as they are.
            if let Some(r) = class.relations.iter().find(|r| !window_table(&r.name)) {
                return Some(format!("read of a table outside the protection window ({})", r.name));
            }
            if class.relations.is_empty() {
                return None;
            }
            tracked_read(rules, class, &linked).err()
        }
    }
}

/// After a statement ran: one thaw did not plan, or planned without proving
/// it safe, may have changed captured rows, whose last-seen values are then
/// no longer known (a write to them is validated first). `class` is what
/// the session read of the statement (only while captures existed).
pub fn forget_unproven(rules: &RuleSet, rewrite: Option<&Rewrite>, class: Option<&Classified>, captures: &mut Captures) {
    if rewrite.is_some_and(|rw| rw.proven) || captures.is_empty() {
        return;
    }
    let Some(class) = class else { return };
    match &class.shape {
        Shape::Unknown(_) => {
            for t in rules.tables() {
                captures.mark_uncertain(None, &t.table);
            }
        }
        // A new row: nothing captured changed (a duplicate key is an error).
        Shape::Write { kind: WriteKind::Insert { values_only: true }, target } if !rules.tables().any(|t| t.links(&target.name)) => {}
        Shape::Write { target, .. } => {
            for t in rules.tables().filter(|t| t.table.eq_ignore_ascii_case(&target.name) || t.links(&target.name)) {
                captures.mark_uncertain(None, &t.table);
            }
        }
        _ => {}
    }
}

/// A read of window rows whose every shown value thaw can attribute to its
/// row: one SELECT, plain projection, base tables only (no view, no derived
/// table, no subquery naming them), each governed table's key shown or
/// pinned by the WHERE.
fn tracked_read(rules: &RuleSet, class: &Classified, linked: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let Some(Statement::Query(q)) = &class.stmt else { return Err("read thaw cannot attribute".into()) };
    let SetExpr::Select(s) = q.body.as_ref() else { return Err("set operation over rows in the protection window".into()) };
    if !class.plain_projection {
        return Err("read that shows rows in the protection window through an expression".into());
    }
    if class.factors.iter().any(|f| f.rel.is_none()) {
        return Err("derived table next to rows in the protection window".into());
    }
    let outer = |name: &str| class.factors.iter().any(|f| f.rel.as_ref().is_some_and(|r| r.name.eq_ignore_ascii_case(name)));
    if class.relations.iter().any(|r| linked(&r.name) && !outer(&r.name)) {
        return Err("subquery over rows in the protection window".into());
    }
    for f in &class.factors {
        let Some(rel) = &f.rel else { continue };
        if !linked(&rel.name) {
            continue;
        }
        let Some(rule) = rules.table(&rel.name) else { return Err(format!("read through the view {}", rel.name)) };
        let quals: Vec<String> = f.alias.iter().chain(std::iter::once(&rel.name)).map(|q| q.to_lowercase()).collect();
        let shows_key = s.projection.iter().any(|item| match item {
            SelectItem::Wildcard(_) => true,
            SelectItem::QualifiedWildcard(kind, _) => {
                let k = kind.to_string().to_lowercase();
                quals.iter().any(|q| k == *q || k.ends_with(&format!(".{q}")) || k == format!("`{q}`"))
            }
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => names_key(e, &rule.key, &quals),
            _ => false,
        });
        let pinned = class.factors.len() == 1 && s.selection.as_ref().is_some_and(|w| find_key(w, &rule.key, &quals).is_some());
        if !shows_key && !pinned {
            return Err(format!("read of {} that shows neither its key nor pins it", rel.name));
        }
    }
    Ok(())
}

fn names_key(e: &Expr, key: &str, quals: &[String]) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(key),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            parts[parts.len() - 1].value.eq_ignore_ascii_case(key) && quals.contains(&parts[parts.len() - 2].value.to_lowercase())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::lex::Modes;
    use crate::rules::{ColMeta, Seen};
    use crate::sql::classify;

    fn rules() -> RuleSet {
        RuleSet::from_yaml(
            "tables:\n  - table: users\n    key: id\n    balance_columns: [balance]\n    trigger_tables: [ledger]\n    views: [v_users]\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn window() -> Captures {
        let mut c = Captures::default();
        let id = c.id("db", "users", "8");
        c.record(id, "id", ColMeta::default(), &[("balance".into(), ColMeta::default(), Some(b"1".to_vec()))], Seen::Unlocked);
        c
    }

    fn gate(sql: &str) -> Option<String> {
        let r = rules();
        let c = window();
        window_gate(&r, &Plan::Forward, &classify(sql.as_bytes(), Modes::default()), &c)
    }

    #[test]
    fn proven_statements_pass() {
        for sql in [
            "SELECT * FROM users WHERE id = 8",
            "SELECT balance FROM users WHERE id = 8",
            "SELECT u.id, u.balance, NOW() FROM users u WHERE u.id = 8",
            "SELECT a.id, a.balance, b.id, b.balance FROM users a JOIN users b ON a.id = b.id",
            "SELECT NOW(), 1",
            "INSERT INTO logs (user_id, amount) VALUES (8, 616)",
            "UPDATE logs SET status = 'x' WHERE id = 3",
            "SET @a = 1",
            "COMMIT",
            "SHOW WARNINGS",
        ] {
            assert_eq!(gate(sql), None, "{sql}");
        }
    }

    #[test]
    fn everything_else_is_validated() {
        for sql in [
            "SELECT balance + 0 FROM users WHERE id = 8",
            "SELECT balance FROM users WHERE id IN (8, 9)",
            "SELECT SUM(balance) FROM users",
            "SELECT * FROM v_users",
            "SELECT x.b FROM (SELECT balance AS b FROM users) x",
            "SELECT * FROM logs WHERE uid IN (SELECT id FROM users WHERE balance > 0)",
            "SELECT id, balance FROM users UNION SELECT 1, 2",
            "DELETE FROM users WHERE id = 8",
            "INSERT INTO users (id) VALUES (9)",
            "INSERT INTO ledger (uid) VALUES (8)",
            "INSERT INTO logs (amount) SELECT balance FROM users WHERE id = 8",
            "CALL credit(8)",
            "SELECT credit(8)",
            "UPDATE users SET balance = 0 WHERE id = 8; COMMIT",
            "SELECT COUNT(*) FROM charges WHERE user_id = 8",
            "SELECT u.id, u.balance FROM users u JOIN logs l ON l.uid = u.id",
            "INSERT INTO charges (user_id) SELECT 8 FROM logs WHERE id = 1",
        ] {
            assert!(gate(sql).is_some(), "{sql}");
        }
    }

    #[test]
    fn unproven_writes_forget_what_they_may_have_changed() {
        let r = rules();
        let class = |sql: &str| classify(sql.as_bytes(), Modes::default());
        let id = window().id("db", "users", "8");
        let uncertain = |sql: &str| {
            let mut c = window();
            c.set_protected(&id);
            forget_unproven(&r, None, Some(&class(sql)), &mut c);
            c.get(&id).unwrap().uncertain
        };
        assert!(uncertain("UPDATE users SET balance = 0 WHERE id = 9"));
        assert!(uncertain("INSERT INTO ledger (uid) VALUES (8)"), "a trigger table");
        assert!(uncertain("CALL credit(8)"));
        assert!(!uncertain("INSERT INTO logs (uid) VALUES (8)"));
        assert!(!uncertain("SELECT balance FROM users WHERE id = 8"));
        let mut c = window();
        forget_unproven(&r, None, None, &mut c);
        assert!(!c.get(&id).unwrap().uncertain, "no class: the statement ran before any capture");
    }

    #[test]
    fn other_tables_do_not_need_the_window() {
        let r = rules();
        let c = Captures::default();
        let sql = "SELECT balance + 0 FROM users WHERE id = 8";
        assert_eq!(window_gate(&r, &Plan::Forward, &classify(sql.as_bytes(), Modes::default()), &c), None);
    }
}
