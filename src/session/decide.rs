//! What the session does with a statement, decided before anything is
//! sent: the rules' plan gated by the protection window, and for a rule in
//! shadow mode, what enforce mode would have done (counted, never done).
//! The decision itself is `rules::decide` (pure, shared with `thaw
//! explain`); this file reads the connection's state, counts and logs.
use super::command::Session;
use crate::ops::metrics::labels;
use crate::rules::decide::{self as pure, Decided, Note, Shadowing};
use crate::rules::safety::window_gate;
use crate::rules::{Action, Plan, PlanContext};
use crate::sql;

pub(super) use crate::rules::decide::Step;

impl Session {
    /// Plan with the rules and gate by the protection window. `count`:
    /// this is the statement's first decision (a re-plan after validation
    /// is not counted again).
    pub(super) fn decide(&mut self, sql: &[u8], class: Option<&sql::Classified>, count: bool) -> Step {
        let window = self.txn.captures.has_window() && self.state.statement_in_transaction();
        let parsable = self.state.charset_parsable() && !self.state.sql_mode_unsupported();
        let text = std::str::from_utf8(sql).ok().filter(|_| parsable);
        let Some(text) = text else {
            // thaw cannot read it as the server will: nothing is unlocked or
            // rewritten, and inside the window it is validated first.
            return if window {
                let reason = "statement thaw cannot read in this character set or sql_mode".to_string();
                let d = pure::gated(self.shadowing(), &self.txn.captures, reason, None);
                self.noted(d, true, count)
            } else {
                Step::Send(None)
            };
        };
        let ctx = PlanContext {
            no_backslash_escapes: self.state.no_backslash_escapes(),
            ansi_quotes: self.state.ansi_quotes(),
            in_transaction: self.state.statement_in_transaction(),
            simultaneous_assignment: self.state.simultaneous_assignment,
            captures: &self.txn.captures,
            schema: self.state.schema.as_deref(),
        };
        let plan = self.live.rules.plan(text, &ctx);
        let gate = match class {
            Some(class) if window => window_gate(&self.live.rules, &plan, class, &self.txn.captures),
            _ => None,
        };
        self.log_plan(&plan, gate.is_some());
        let gated = gate.is_some() && matches!(plan, Plan::Forward | Plan::Unhandled { .. });
        let d = pure::decide(self.shadowing(), &self.txn.captures, plan, gate);
        self.noted(d, gated, count)
    }

    pub(super) fn shadowing(&self) -> Shadowing<'_> {
        Shadowing { rules: &self.live.rules, all: self.live.config.shadow }
    }

    /// The rule of `table` when it is in shadow mode (or thaw runs with `shadow`).
    pub(super) fn shadow_rule(&self, table: &str) -> Option<String> {
        self.shadowing().rule(table)
    }

    /// Every rule is in shadow mode: thaw changes nothing on this connection.
    pub(super) fn all_shadow(&self) -> bool {
        self.shadowing().everything()
    }

    /// Count the decision's series (`count`) and hand back its step.
    fn noted(&self, d: Decided, gated: bool, count: bool) -> Step {
        if gated && matches!(d.step, Step::Shadow(_)) {
            tracing::info!("shadow: statement would be validated first");
        }
        if count {
            let m = &self.shared.metrics;
            for n in d.notes {
                match n {
                    Note::Unhandled { table } => m.unhandled.get_or_create(&labels([("table", table)])).inc(),
                    Note::Rewritten { rule, action } => {
                        m.rewrites.get_or_create(&labels([("rule", rule), ("action", action.into())])).inc()
                    }
                    Note::Shadow { rule, action } => {
                        m.shadow_actions.get_or_create(&labels([("rule", rule), ("action", action.into())])).inc()
                    }
                };
            }
        }
        d.step
    }

    /// The log lines of a plan: unhandled shapes once per fingerprint, rewrites.
    fn log_plan(&self, plan: &Plan, gated: bool) {
        match plan {
            Plan::Forward => {}
            Plan::Unhandled { table, fingerprint, reason } => {
                if gated {
                    tracing::info!(%table, %fingerprint, %reason, "statement after an unlocked read is validated first");
                    return;
                }
                // Bounded: shapes are literal-free, but a runaway generator of shapes must not grow memory.
                let first_time =
                    self.shared.logged_unhandled.lock().map(|mut s| s.len() < 10_000 && s.insert(fingerprint.clone())).unwrap_or(false);
                if first_time {
                    tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table forwarded untouched");
                }
            }
            Plan::Reject { table, fingerprint, reason, .. } => {
                if self.shadow_rule(table).is_some() {
                    tracing::info!(%table, %fingerprint, %reason, "shadow: statement would be refused (unhandled: reject)");
                } else {
                    tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table refused (unhandled: reject)");
                }
            }
            Plan::Rewrite(rw) => {
                if self.shadow_rule(&rw.table).is_some() {
                    tracing::info!(rule = %rw.rule, action = rw.action.name(), fingerprint = %rw.fingerprint, "shadow: statement would be rewritten");
                } else if rw.action != Action::Pass {
                    if self.live.config.log.redact_literals {
                        tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, "statement rewritten");
                    } else {
                        tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, sql = %rw.sql, "statement rewritten");
                    }
                }
            }
        }
    }
}
