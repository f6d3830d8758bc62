//! What the session does with a statement, decided before anything is
//! sent: the rules' plan gated by the protection window, and for a rule in
//! shadow mode, what enforce mode would have done (counted, never done).
use super::command::Session;
use crate::ops::metrics::labels;
use crate::rules::safety::window_gate;
use crate::rules::{Action, ErrorResponse, Plan, PlanContext, Rewrite, RuleMode};
use crate::sql;

pub(super) enum Step {
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
                self.gated("statement thaw cannot read in this character set or sql_mode".into(), None, count)
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
        match plan {
            Plan::Forward => match gate {
                Some(reason) => self.gated(reason, None, count),
                None => Step::Send(None),
            },
            Plan::Unhandled { table, fingerprint, reason } => {
                if count {
                    self.shared.metrics.unhandled.get_or_create(&labels([("table", table.clone())])).inc();
                }
                if let Some(reason) = gate {
                    tracing::info!(%table, %fingerprint, %reason, "statement after an unlocked read is validated first");
                    return self.gated(reason, None, count);
                }
                // Bounded: shapes are literal-free, but a runaway generator of shapes must not grow memory.
                let first_time =
                    self.shared.logged_unhandled.lock().map(|mut s| s.len() < 10_000 && s.insert(fingerprint.clone())).unwrap_or(false);
                if first_time {
                    tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table forwarded untouched");
                }
                Step::Send(None)
            }
            Plan::Reject { table, fingerprint, reason, error } => {
                if count {
                    self.shared.metrics.unhandled.get_or_create(&labels([("table", table.clone())])).inc();
                }
                if let Some(rule) = self.shadow_rule(&table) {
                    if count {
                        self.count_shadow(&rule, "refuse");
                    }
                    tracing::info!(%table, %fingerprint, %reason, "shadow: statement would be refused (unhandled: reject)");
                    return Step::Shadow(None);
                }
                tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table refused (unhandled: reject)");
                Step::Refuse(error)
            }
            Plan::Rewrite(rw) => {
                if let Some(rule) = self.shadow_rule(&rw.table) {
                    if count {
                        if rw.action != Action::Pass {
                            self.count_shadow(&rule, action_name(rw.action));
                        }
                        if rw.cas {
                            self.count_shadow(&rule, "cas");
                        }
                        if gate.is_some() {
                            self.count_shadow(&rule, "validate");
                        }
                    }
                    tracing::info!(rule = %rw.rule, action = action_name(rw.action), fingerprint = %rw.fingerprint, "shadow: statement would be rewritten");
                    return Step::Shadow(Some(rw));
                }
                if rw.action != Action::Pass && count {
                    let action = action_name(rw.action).to_string();
                    self.shared.metrics.rewrites.get_or_create(&labels([("rule", rw.rule.clone()), ("action", action)])).inc();
                }
                if rw.action != Action::Pass {
                    if self.live.config.log.redact_literals {
                        tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, "statement rewritten");
                    } else {
                        tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, sql = %rw.sql, "statement rewritten");
                    }
                }
                let rewrite = Some(rw);
                match gate {
                    Some(reason) => Step::ValidateThenSend { reason, rewrite },
                    None => Step::Send(rewrite),
                }
            }
        }
    }

    /// The window asks for validation. When every rule with rows in the
    /// window is in shadow mode, that is counted and the statement goes as
    /// it came (the app holds its own locks there).
    fn gated(&mut self, reason: String, rewrite: Option<Box<Rewrite>>, count: bool) -> Step {
        let tables: Vec<String> = self.txn.captures.window().map(|(id, _)| id.table.clone()).collect();
        let rules: Option<Vec<String>> = tables.iter().map(|t| self.shadow_rule(t)).collect();
        match rules {
            Some(mut rules) if !rules.is_empty() => {
                rules.sort();
                rules.dedup();
                if count {
                    for r in &rules {
                        self.count_shadow(r, "validate");
                    }
                }
                tracing::info!(%reason, "shadow: statement would be validated first");
                Step::Shadow(rewrite)
            }
            _ => Step::ValidateThenSend { reason, rewrite },
        }
    }

    /// The rule of `table` when it is in shadow mode (or thaw runs with `shadow`).
    pub(super) fn shadow_rule(&self, table: &str) -> Option<String> {
        let rule = self.live.rules.table(table)?;
        (self.live.config.shadow || rule.mode == RuleMode::Shadow).then(|| rule.name.clone())
    }

    /// Every rule is in shadow mode: thaw changes nothing on this connection.
    pub(super) fn all_shadow(&self) -> bool {
        self.live.config.shadow || (!self.live.rules.is_empty() && self.live.rules.tables().all(|t| t.mode == RuleMode::Shadow))
    }

    fn count_shadow(&self, rule: &str, action: &str) {
        self.shared.metrics.shadow_actions.get_or_create(&labels([("rule", rule.to_string()), ("action", action.to_string())])).inc();
    }
}

pub(super) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Unlock => "unlock",
        Action::Guard => "guard",
        Action::Delta => "delta",
        Action::Pass => "pass",
    }
}
