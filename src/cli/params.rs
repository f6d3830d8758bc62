//! `thaw explain --params`: a statement with `?` and the values an EXECUTE
//! would bind, shown as the session plans it (the bound text) and as it
//! would run (the app's statement, thaw's lock-cut shadow, or text).
use crate::rules::lex::Modes;
use crate::rules::{Action, Plan, PlanContext, RuleSet};
use crate::sql::bind::{Quoting, bind, placeholders};
use crate::wire::binary::{BinValue, types};

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("--params: {0}")]
    Syntax(String),
    #[error("--params: {0}")]
    Bind(#[from] crate::sql::bind::BindError),
}

/// `8, 12.50, 'ann', NULL, 1.5e3`: integers, decimals (sent as DECIMAL
/// strings), doubles (with an exponent), quoted strings ('' for a quote),
/// NULL, as a client would bind them.
pub fn parse(list: &str) -> Result<Vec<BinValue>, ParamsError> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (value, tail) = if let Some(r) = rest.strip_prefix('\'') {
            let mut s = String::new();
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        s.push('\'');
                        chars.next();
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                s.push(c);
            }
            let end = end.ok_or_else(|| ParamsError::Syntax("unterminated quoted string".into()))?;
            (BinValue::Bytes(types::VAR_STRING, s.into_bytes()), &r[end..])
        } else {
            let (word, tail) = rest.find(',').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
            let word = word.trim();
            (number(word).ok_or_else(|| ParamsError::Syntax(format!("{word:?} is not a number, a quoted string or NULL")))?, tail)
        };
        out.push(value);
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(t) => t.trim_start(),
            None if tail.is_empty() => "",
            None => return Err(ParamsError::Syntax(format!("expected a comma before {tail:?}"))),
        };
    }
    Ok(out)
}

fn number(w: &str) -> Option<BinValue> {
    if w.eq_ignore_ascii_case("null") {
        return Some(BinValue::Null);
    }
    if w.contains(['e', 'E']) {
        return w.parse::<f64>().ok().map(BinValue::Double);
    }
    if w.contains('.') {
        let digits = w.strip_prefix('-').unwrap_or(w);
        let (int, frac) = digits.split_once('.')?;
        let plain = !int.is_empty() && !frac.is_empty() && (int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit());
        return plain.then(|| BinValue::Bytes(types::NEWDECIMAL, w.as_bytes().to_vec()));
    }
    match w.parse::<i64>() {
        Ok(i) => Some(BinValue::Int(i)),
        Err(_) => w.parse::<u64>().ok().map(BinValue::UInt),
    }
}

/// The prepared statement, its bound form, how it would run, and the plan.
pub fn explain(rules: &RuleSet, sql: &str, values: &[BinValue], ctx: &PlanContext<'_>) -> Result<String, ParamsError> {
    let modes = Modes { backslash_escapes: !ctx.no_backslash_escapes, ansi_quotes: ctx.ansi_quotes };
    let at = placeholders(sql, modes)?;
    let bound = bind(sql, &at, values, modes, Quoting::Utf8mb4)?;
    let route = match rules.plan(&bound, ctx) {
        Plan::Rewrite(rw) if rw.action == Action::Unlock => match crate::rules::lock_clause::cut(sql, modes) {
            Some(shadow) => format!("thaw's shadow statement, prepared once on the backend: {shadow}"),
            None => "the app's statement, with its lock".to_string(),
        },
        Plan::Rewrite(rw) if rw.action != Action::Pass => {
            "text: the rewritten statement below (COM_QUERY; the OK is the same packet)".into()
        }
        _ => "the app's statement, as it came".into(),
    };
    let mut out = format!("prepared: {sql}\nexecuted as: {bound}\nruns as: {route}\n");
    out.push_str(&crate::rules::explain(rules, &bound, ctx));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_lists() {
        let v = parse("8, 12.50, 'it''s', NULL, 1.5e3, -2").unwrap();
        assert_eq!(
            v,
            vec![
                BinValue::Int(8),
                BinValue::Bytes(types::NEWDECIMAL, b"12.50".to_vec()),
                BinValue::Bytes(types::VAR_STRING, b"it's".to_vec()),
                BinValue::Null,
                BinValue::Double(1500.0),
                BinValue::Int(-2),
            ]
        );
        assert_eq!(parse("NULL,7").unwrap(), vec![BinValue::Null, BinValue::Int(7)]);
        assert!(parse("'open").is_err());
        assert!(parse("8 9").is_err());
        assert!(parse("x").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn prepared_read_runs_as_a_shadow_and_write_as_text() {
        let rules =
            RuleSet::from_yaml("tables:\n  - table: users\n    key: id\n    balance_columns: [frozen_balance]\n", "t.yaml").unwrap();
        let mut caps = crate::rules::Captures::default();
        caps.seed("", "users", "8", "frozen_balance", Some("100".into()));
        let ctx = PlanContext {
            no_backslash_escapes: false,
            ansi_quotes: false,
            in_transaction: true,
            simultaneous_assignment: Some(false),
            captures: &caps,
            schema: None,
        };
        let read = explain(&rules, "SELECT frozen_balance FROM users WHERE id = ? FOR UPDATE", &[BinValue::Int(8)], &ctx).unwrap();
        assert!(read.contains("executed as: SELECT frozen_balance FROM users WHERE id = 8 FOR UPDATE\n"), "{read}");
        assert!(
            read.contains(
                "runs as: thaw's shadow statement, prepared once on the backend: SELECT frozen_balance FROM users WHERE id = ?\n"
            ),
            "{read}"
        );
        let write = explain(&rules, "UPDATE users SET frozen_balance = ? WHERE id = ?", &[BinValue::Double(150.0), BinValue::Int(8)], &ctx)
            .unwrap();
        assert!(write.contains("executed as: UPDATE users SET frozen_balance = 1.5e2 WHERE id = 8\n"), "{write}");
        assert!(write.contains("runs as: text"), "{write}");
        assert!(write.contains("frozen_balance + 50"), "{write}");
        assert!(explain(&rules, "SELECT ?", &[], &ctx).is_err());
    }
}
