//! Triggers, views and stored routines of the DSN's schema that reach a
//! governed table without thaw seeing the statement that does it.
//!
//! "Mentions" is a case-insensitive match of the table's name as a whole
//! identifier anywhere in the definition (strings and comments included,
//! for dynamic SQL). A name qualified by another schema does not count; a
//! match may be a read, and a false positive only asks for one more entry
//! in `trigger_tables` or `views`.
use super::CheckError;
use crate::rules::TableRule;
use mysql_async::prelude::Queryable;

pub(super) struct Trigger {
    name: String,
    /// The table the trigger is defined on.
    table: String,
    /// BEFORE / AFTER.
    timing: String,
    /// INSERT / UPDATE / DELETE.
    event: String,
    body: String,
}

pub(super) struct View {
    name: String,
    /// Empty when the account may not see it (SHOW VIEW).
    definition: String,
}

pub(super) struct Routine {
    name: String,
    /// PROCEDURE / FUNCTION.
    kind: String,
    /// `None` when the account may not see it.
    body: Option<String>,
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

pub(super) async fn triggers(conn: &mut mysql_async::Conn, schema: &str) -> Result<Vec<Trigger>, CheckError> {
    let rows: Vec<(String, String, String, String, Vec<u8>)> = conn
        .exec(
            "SELECT trigger_name, event_object_table, action_timing, event_manipulation, action_statement FROM information_schema.triggers \
             WHERE trigger_schema = ? ORDER BY event_object_table, trigger_name",
            (schema,),
        )
        .await?;
    Ok(rows.into_iter().map(|(name, table, timing, event, body)| Trigger { name, table, timing, event, body: text(body) }).collect())
}

pub(super) async fn views(conn: &mut mysql_async::Conn, schema: &str) -> Result<Vec<View>, CheckError> {
    let rows: Vec<(String, Option<Vec<u8>>)> = conn
        .exec("SELECT table_name, view_definition FROM information_schema.views WHERE table_schema = ? ORDER BY table_name", (schema,))
        .await?;
    Ok(rows.into_iter().map(|(name, d)| View { name, definition: d.map(text).unwrap_or_default() }).collect())
}

pub(super) async fn routines(conn: &mut mysql_async::Conn, schema: &str) -> Result<Vec<Routine>, CheckError> {
    let rows: Vec<(String, String, Option<Vec<u8>>)> = conn
        .exec(
            "SELECT routine_name, routine_type, routine_definition FROM information_schema.routines WHERE routine_schema = ? ORDER BY routine_name",
            (schema,),
        )
        .await?;
    Ok(rows.into_iter().map(|(name, kind, body)| Routine { name, kind, body: body.map(text) }).collect())
}

pub(super) fn check(
    governed: &[&TableRule],
    schema: &str,
    triggers: &[Trigger],
    views: &[View],
    routines: &[Routine],
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    if governed.is_empty() {
        return;
    }
    for v in views.iter().filter(|v| v.definition.trim().is_empty()) {
        warnings
            .push(format!("{schema}: view {}: its definition is not visible to this account (SHOW VIEW privilege): not checked", v.name));
    }
    for r in routines.iter().filter(|r| r.body.is_none()) {
        warnings.push(format!(
            "{schema}: {} {}: its definition is not visible to this account: not checked",
            r.kind.to_lowercase(),
            r.name
        ));
    }
    for t in governed {
        check_triggers(t, schema, triggers, warnings, problems);
        check_views(t, schema, views, warnings, problems);
        for r in routines {
            if r.body.as_deref().is_some_and(|b| mentions(b, schema, &t.table)) {
                warnings.push(format!(
                    "{}: table {}: {} {} mentions {}: thaw does not see the statements it runs, so they are never rewritten; after an \
                     unlocked read of {}, a CALL, or a statement calling a function that is not a known built-in, is validated at runtime \
                     (thaw re-locks the rows it read and compares them first), not by this check",
                    t.source,
                    t.table,
                    r.kind.to_lowercase(),
                    r.name,
                    t.table,
                    t.table
                ));
            }
        }
    }
}

fn check_triggers(t: &TableRule, schema: &str, triggers: &[Trigger], warnings: &mut Vec<String>, problems: &mut Vec<String>) {
    let at = &t.source;
    let guarded: Vec<&String> =
        t.invariants.iter().flat_map(|i| i.columns.iter()).chain(&t.balance_columns).chain(&t.cas_columns).collect();
    for tr in triggers {
        if tr.table.eq_ignore_ascii_case(&t.table) {
            // The guard is part of the UPDATE's WHERE, evaluated before a BEFORE
            // UPDATE trigger gets to change NEW.
            if tr.timing.eq_ignore_ascii_case("BEFORE") && tr.event.eq_ignore_ascii_case("UPDATE") {
                let set = assigned_new_columns(&tr.body, &guarded);
                if !set.is_empty() {
                    warnings.push(format!(
                        "{at}: table {}: trigger {} (BEFORE UPDATE on {}) assigns NEW.{}: it runs after the guard in the UPDATE's WHERE was \
                         evaluated, so values it assigns there are not checked against the invariants",
                        t.table,
                        tr.name,
                        tr.table,
                        set.join(", NEW.")
                    ));
                }
            }
            continue;
        }
        if !mentions(&tr.body, schema, &t.table) {
            continue;
        }
        if !t.trigger_tables.contains(&tr.table.to_lowercase()) {
            problems.push(format!(
                "{at}: table {}: trigger {} ({} {} on {}) mentions {}, but {} is not in trigger_tables: a write to {} after an unlocked read of \
                 {} would change {} through the trigger without being validated first; add {} to trigger_tables",
                t.table,
                tr.name,
                tr.timing,
                tr.event,
                tr.table,
                t.table,
                tr.table,
                tr.table,
                t.table,
                t.table,
                tr.table
            ));
        }
    }
    for listed in &t.trigger_tables {
        let found = triggers.iter().any(|tr| tr.table.eq_ignore_ascii_case(listed) && mentions(&tr.body, schema, &t.table));
        if !found {
            warnings.push(format!(
                "{at}: table {}: trigger_tables lists {listed}, but no trigger on {listed} in {schema} mentions {}: a stale entry? Writes to \
                 {listed} after an unlocked read are still validated",
                t.table, t.table
            ));
        }
    }
}

fn check_views(t: &TableRule, schema: &str, views: &[View], warnings: &mut Vec<String>, problems: &mut Vec<String>) {
    let at = &t.source;
    // Views over the table, directly or through other views: (view, via).
    let mut reach: Vec<(&View, Option<&str>)> =
        views.iter().filter(|v| mentions(&v.definition, schema, &t.table)).map(|v| (v, None)).collect();
    loop {
        let next = views.iter().find_map(|v| {
            if reach.iter().any(|(r, _)| r.name == v.name) {
                return None;
            }
            reach.iter().find(|(r, _)| mentions(&v.definition, schema, &r.name)).map(|(r, _)| (v, Some(r.name.as_str())))
        });
        match next {
            Some(n) => reach.push(n),
            None => break,
        }
    }
    for (v, via) in &reach {
        if t.views.contains(&v.name.to_lowercase()) {
            continue;
        }
        let through = via.map(|w| format!(" (through view {w})")).unwrap_or_default();
        problems.push(format!(
            "{at}: table {}: view {} selects from {}{through}, but is not in views: statements through {} read and write the rows of {} where \
             the rule does not see them, so after an unlocked read of {} they would not be validated first; add {} to views",
            t.table, v.name, t.table, v.name, t.table, t.table, v.name
        ));
    }
    for listed in &t.views {
        if !reach.iter().any(|(v, _)| v.name.eq_ignore_ascii_case(listed)) {
            let what = if views.iter().any(|v| v.name.eq_ignore_ascii_case(listed)) { "does not select from" } else { "is not a view of" };
            let whom = if what == "is not a view of" { schema.to_string() } else { t.table.clone() };
            warnings.push(format!("{at}: table {}: views lists {listed}, which {what} {whom}: a stale entry?", t.table));
        }
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    /// An identifier or keyword (bare or backquoted), lowercase.
    Word(String),
    Dot,
    /// Any other character.
    Other(char),
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// A rough SQL tokenizer: words, dots, and everything else. The text of
/// quoted strings is tokenized too (dynamic SQL), between two `Other`s.
fn tokens(text: &str, out: &mut Vec<Tok>) {
    let b: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '`' {
                    if b.get(i + 1) == Some(&'`') {
                        s.push('`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Word(s.to_lowercase()));
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '\\' && i + 1 < b.len() {
                    s.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        s.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Other(c));
            tokens(&s, out);
            out.push(Tok::Other(c));
        } else if is_word_char(c) {
            let start = i;
            while i < b.len() && is_word_char(b[i]) {
                i += 1;
            }
            out.push(Tok::Word(b[start..i].iter().collect::<String>().to_lowercase()));
        } else {
            out.push(if c == '.' { Tok::Dot } else { Tok::Other(c) });
            i += 1;
        }
    }
}

/// `text` names `table` as a whole identifier, unqualified or qualified by
/// `schema`.
pub(super) fn mentions(text: &str, schema: &str, table: &str) -> bool {
    let (schema, table) = (schema.to_lowercase(), table.to_lowercase());
    let mut toks = Vec::new();
    tokens(text, &mut toks);
    (0..toks.len()).any(|i| {
        if toks[i] != Tok::Word(table.clone()) {
            return false;
        }
        match (i.checked_sub(2).map(|j| &toks[j]), i.checked_sub(1).map(|j| &toks[j])) {
            (Some(Tok::Word(q)), Some(Tok::Dot)) => *q == schema,
            _ => true,
        }
    })
}

/// The columns of `cols` that `text` assigns as `SET NEW.col = ...` (or
/// `, NEW.col := ...` further down a SET list).
fn assigned_new_columns(text: &str, cols: &[&String]) -> Vec<String> {
    let mut toks = Vec::new();
    tokens(text, &mut toks);
    let mut out: Vec<String> = Vec::new();
    for (i, w) in toks.windows(4).enumerate() {
        let [before, Tok::Word(n), Tok::Dot, Tok::Word(c)] = w else {
            continue;
        };
        let starts = matches!(before, Tok::Word(s) if s == "set") || *before == Tok::Other(',');
        let assigns =
            matches!((toks.get(i + 4), toks.get(i + 5)), (Some(Tok::Other('=')), _) | (Some(Tok::Other(':')), Some(Tok::Other('='))));
        if starts && assigns && n == "new" && cols.contains(&c) && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_whole_identifiers() {
        assert!(mentions("UPDATE users SET balance = balance + 1 WHERE id = NEW.user_id", "billing", "users"));
        assert!(mentions("update `Users` set x = 1", "billing", "users"));
        assert!(mentions("select `billing`.`users`.`id` AS `id` from `billing`.`users`", "billing", "users"));
        assert!(mentions("INSERT INTO billing . users VALUES (1)", "billing", "users"));
        assert!(mentions("BEGIN SET @s = 'UPDATE users SET a = 1'; PREPARE st FROM @s; EXECUTE st; END", "billing", "users"));
        assert!(!mentions("UPDATE users_archive SET a = 1", "billing", "users"));
        assert!(!mentions("UPDATE archive.users SET a = 1", "billing", "users"));
        assert!(!mentions("UPDATE `archive`.`users` SET a = 1", "billing", "users"));
        assert!(!mentions("SELECT 1", "billing", "users"));
        assert!(!mentions("SET NEW.x = 'it''s `odd'", "billing", "users"));
    }

    #[test]
    fn assigned_new_columns_found() {
        let b = "balance".to_string();
        let f = "frozen_balance".to_string();
        let cols = [&b, &f];
        assert_eq!(
            assigned_new_columns("SET NEW.balance = OLD.balance, new.`frozen_balance` := 0, NEW.balance = 1", &cols),
            ["balance", "frozen_balance"]
        );
        assert_eq!(assigned_new_columns("SET NEW.frozen_balance = LEAST(NEW.frozen_balance, NEW.balance)", &cols), ["frozen_balance"]);
        assert!(assigned_new_columns("SET NEW.updated_at = NOW(), OLD.balance = 1", &cols).is_empty());
        assert!(assigned_new_columns("IF NEW.balance = 0 THEN SIGNAL SQLSTATE '45000'; END IF", &cols).is_empty());
    }
}
