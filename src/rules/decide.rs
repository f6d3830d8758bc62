//! What the session does with a planned statement before anything is sent:
//! the plan gated by the protection window, and for a rule in shadow mode
//! what enforce mode would have done (counted, never done). Pure: the
//! session (`session::decide`) counts and logs the notes; `thaw explain`
//! prints them.
use super::{Action, Captures, ErrorResponse, Plan, Rewrite, RuleMode, RuleSet};

#[derive(Debug)]
pub enum Step {
    /// Send it (rewritten or not).
    Send(Option<Box<Rewrite>>),
    /// Re-lock and validate the window, then send.
    ValidateThenSend { reason: String, rewrite: Option<Box<Rewrite>> },
    /// Answer with an error; the server never sees the statement.
    Refuse(ErrorResponse),
    /// Shadow mode: send it as the app wrote it. The plan enforce mode would
    /// carry out is kept so the session follows it (captures, window) and
    /// later statements are planned as enforce would plan them.
    Shadow(Option<Box<Rewrite>>),
}

/// A series the decision counts (once per statement: not on a re-plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `thaw_statements_unhandled_total{table}`
    Unhandled { table: String },
    /// `thaw_statements_rewritten_total{rule,action}`
    Rewritten { rule: String, action: &'static str },
    /// `thaw_shadow_actions_total{rule,action}`
    Shadow { rule: String, action: &'static str },
}

#[derive(Debug)]
pub struct Decided {
    pub step: Step,
    pub notes: Vec<Note>,
}

/// Which rules are in shadow mode: `all` is `thaw run --shadow` (config `shadow`).
#[derive(Debug, Clone, Copy)]
pub struct Shadowing<'a> {
    pub rules: &'a RuleSet,
    pub all: bool,
}

impl Shadowing<'_> {
    /// The rule of `table` when it is in shadow mode.
    pub fn rule(&self, table: &str) -> Option<String> {
        let rule = self.rules.table(table)?;
        (self.all || rule.mode == RuleMode::Shadow).then(|| rule.name.clone())
    }

    /// Every rule is in shadow mode: thaw changes nothing on the connection.
    pub fn everything(&self) -> bool {
        self.all || (!self.rules.is_empty() && self.rules.tables().all(|t| t.mode == RuleMode::Shadow))
    }
}

/// The step for `plan` with the window's `gate` (`rules::safety::window_gate`).
pub fn decide(shadow: Shadowing<'_>, captures: &Captures, plan: Plan, gate: Option<String>) -> Decided {
    let mut notes = Vec::new();
    let step = match plan {
        Plan::Forward => match gate {
            Some(reason) => return gated(shadow, captures, reason, None),
            None => Step::Send(None),
        },
        Plan::Unhandled { table, .. } => {
            notes.push(Note::Unhandled { table });
            match gate {
                Some(reason) => {
                    let mut d = gated(shadow, captures, reason, None);
                    notes.append(&mut d.notes);
                    d.notes = notes;
                    return d;
                }
                None => Step::Send(None),
            }
        }
        Plan::Reject { table, error, .. } => {
            notes.push(Note::Unhandled { table: table.clone() });
            match shadow.rule(&table) {
                Some(rule) => {
                    notes.push(Note::Shadow { rule, action: "refuse" });
                    Step::Shadow(None)
                }
                None => Step::Refuse(error),
            }
        }
        Plan::Rewrite(rw) => {
            if let Some(rule) = shadow.rule(&rw.table) {
                if rw.action != Action::Pass {
                    notes.push(Note::Shadow { rule: rule.clone(), action: rw.action.name() });
                }
                if rw.cas {
                    notes.push(Note::Shadow { rule: rule.clone(), action: "cas" });
                }
                if gate.is_some() {
                    notes.push(Note::Shadow { rule, action: "validate" });
                }
                Step::Shadow(Some(rw))
            } else {
                if rw.action != Action::Pass {
                    notes.push(Note::Rewritten { rule: rw.rule.clone(), action: rw.action.name() });
                }
                match gate {
                    Some(reason) => Step::ValidateThenSend { reason, rewrite: Some(rw) },
                    None => Step::Send(Some(rw)),
                }
            }
        }
    };
    Decided { step, notes }
}

/// The window asks for validation. When every rule with rows in the
/// window is in shadow mode, that is counted and the statement goes as it
/// came (the app holds its own locks there).
pub fn gated(shadow: Shadowing<'_>, captures: &Captures, reason: String, rewrite: Option<Box<Rewrite>>) -> Decided {
    let rules: Option<Vec<String>> = captures.window().map(|(id, _)| shadow.rule(&id.table)).collect();
    match rules {
        Some(mut rules) if !rules.is_empty() => {
            rules.sort();
            rules.dedup();
            let notes = rules.into_iter().map(|rule| Note::Shadow { rule, action: "validate" }).collect();
            Decided { step: Step::Shadow(rewrite), notes }
        }
        _ => Decided { step: Step::ValidateThenSend { reason, rewrite }, notes: Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ColMeta, PlanContext, Seen};

    fn rules(mode: &str) -> RuleSet {
        RuleSet::from_yaml(
            &format!("tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    balance_columns: [balance]\n    mode: {mode}\n"),
            "t.yaml",
        )
        .unwrap()
    }

    fn window() -> Captures {
        let mut c = Captures::default();
        let id = c.id("db", "users", "8");
        c.record(id, "id", ColMeta::default(), &[("balance".into(), ColMeta::default(), Some(b"5".to_vec()))], Seen::Unlocked);
        c
    }

    fn plan(r: &RuleSet, c: &Captures, sql: &str) -> Plan {
        let ctx = PlanContext {
            no_backslash_escapes: false,
            ansi_quotes: false,
            in_transaction: true,
            simultaneous_assignment: Some(false),
            captures: c,
            schema: Some("db"),
        };
        r.plan(sql, &ctx)
    }

    #[test]
    fn enforce_rewrites_and_validates() {
        let r = rules("enforce");
        let c = window();
        let s = Shadowing { rules: &r, all: false };
        let d = decide(s, &c, plan(&r, &c, "UPDATE users SET balance = 1 WHERE id = 8"), None);
        assert!(matches!(d.step, Step::Send(Some(_))));
        assert_eq!(d.notes, [Note::Rewritten { rule: "users".into(), action: "delta" }]);
        let d = decide(s, &c, Plan::Forward, Some("why".into()));
        assert!(matches!(d.step, Step::ValidateThenSend { .. }) && d.notes.is_empty());
    }

    #[test]
    fn shadow_counts_what_enforce_would_do() {
        let r = rules("shadow");
        let c = window();
        let s = Shadowing { rules: &r, all: false };
        assert!(s.everything());
        let d = decide(s, &c, plan(&r, &c, "UPDATE users SET balance = 1 WHERE id = 8"), Some("gate".into()));
        assert!(matches!(d.step, Step::Shadow(Some(_))));
        assert_eq!(
            d.notes,
            [Note::Shadow { rule: "users".into(), action: "delta" }, Note::Shadow { rule: "users".into(), action: "validate" }]
        );
        let d = decide(s, &c, Plan::Unhandled { table: "users".into(), fingerprint: "f".into(), reason: "r".into() }, Some("g".into()));
        assert!(matches!(d.step, Step::Shadow(None)));
        assert_eq!(d.notes, [Note::Unhandled { table: "users".into() }, Note::Shadow { rule: "users".into(), action: "validate" }]);
        let r = rules("enforce");
        let s = Shadowing { rules: &r, all: true };
        assert!(s.everything() && s.rule("USERS").is_some(), "thaw run --shadow");
    }
}
