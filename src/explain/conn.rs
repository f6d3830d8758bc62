//! One connection of an explained file: the session's decisions for a
//! statement, taken in the order `Session::query` takes them, with the
//! session's own parts (the planner, the window gate, the capture sink,
//! the transaction state) and a model of the server's status flags.
//!
//! What explain cannot know it assumes, and says so in its docs: a
//! validation finds the rows as the app saw them, a write matches its row,
//! no statement fails, and the connection speaks utf8mb4 with the default
//! sql_mode.
use super::input::Row;
use super::report::{Decision, ErrorOut, PlanOut, RowOut, RowsOut, SessionOut, Step};
use super::rows::{column_def, meta, origin, row_packet};
use crate::rules::decide::{Decided, Note, Shadowing, Step as SessionStep, decide};
use crate::rules::defer::{Deferred, flush_cause, may_defer};
use crate::rules::lex::Modes;
use crate::rules::safety::{forget_unproven, window_gate};
use crate::rules::{Action, CaptureSpec, Captures, ErrorResponse, PlanContext, Rewrite, RuleSet, Seen};
use crate::session::capture::ResultCapture;
use crate::session::txn::{Phase, StatementEnd, Txn};
use crate::sql::{Classified, Shape, TxControl, classify, is_plain_commit, tx_control};

/// Defaults of a fresh MariaDB session: backslash escapes, no ANSI_QUOTES.
const MODES: Modes = Modes { backslash_escapes: true, ansi_quotes: false };

pub struct Conn {
    txn: Txn,
    /// The backend runs anonymous compound statements (`defer_writes`).
    mariadb: bool,
    /// `thaw run --shadow`: every rule in shadow mode.
    shadow_all: bool,
    /// The last statement was a held-back write (`Txn::held_last`).
    held_last: bool,
    /// The server's AUTOCOMMIT and IN_TRANS status flags, as modelled.
    autocommit: bool,
    in_trans: bool,
    pub schema: Option<String>,
}

impl Conn {
    pub fn new(server: Server, autocommit: bool, schema: Option<String>, captures: Captures) -> Self {
        let mut txn = Txn::new(false);
        txn.captures = captures;
        Conn { txn, mariadb: server.mariadb, shadow_all: server.shadow_all, held_last: false, autocommit, in_trans: false, schema }
    }

    fn shadowing<'a>(&self, rules: &'a RuleSet) -> Shadowing<'a> {
        Shadowing { rules, all: self.shadow_all }
    }

    /// As `ConnState::statement_in_transaction`.
    fn statement_in_transaction(&self) -> bool {
        self.in_trans || !self.autocommit
    }

    /// The connection ends: the server rolls back what is open.
    pub fn quit(&mut self) {
        self.txn.end();
        self.in_trans = false;
    }

    /// The entry checks of `Session::query` and `Session::execute`: a
    /// transaction thaw rolled back, or one whose app saw a concurrent change.
    /// `Some`: the session answers without sending anything.
    fn answered(&mut self, rules: &RuleSet, ctl: &TxControl) -> Option<SessionOut> {
        if let Some(err) = self.txn.aborted().cloned() {
            match ctl {
                TxControl::Rollback { .. } | TxControl::Begin => return None,
                TxControl::Commit { .. } => self.txn.end(),
                _ => {}
            }
            let mut s = SessionOut::new(Decision::AnswerAborted);
            s.error = Some((&err).into());
            return Some(s);
        }
        // In shadow mode the app holds its own locks and nothing is aborted.
        if self.txn.captures.diverged && !matches!(ctl, TxControl::Rollback { .. }) && !self.shadowing(rules).everything() {
            let mut s = SessionOut::new(Decision::Refuse);
            s.why =
                Some("a read showed a row this transaction had read changed by another session: thaw rolls the transaction back".into());
            s.error = Some(deadlock());
            self.abort();
            return Some(s);
        }
        None
    }

    /// `Session::abort_transaction`: ROLLBACK on the server, later
    /// statements answered with the rolled-back error.
    fn abort(&mut self) {
        let e = deadlock();
        self.txn.abort(ErrorResponse {
            code: e.code,
            sqlstate: e.sqlstate,
            message: "thaw: this transaction was rolled back (1213 40001); send ROLLBACK and retry it".into(),
        });
        self.in_trans = false;
    }

    fn ctx<'a>(&'a self, in_tx: bool) -> PlanContext<'a> {
        PlanContext {
            no_backslash_escapes: !MODES.backslash_escapes,
            ansi_quotes: MODES.ansi_quotes,
            in_transaction: in_tx,
            // MariaDB's default sql_mode has no SIMULTANEOUS_ASSIGNMENT.
            simultaneous_assignment: Some(false),
            captures: &self.txn.captures,
            schema: self.schema.as_deref(),
        }
    }

    /// `Session::decide` without its logging: the plan, the window gate,
    /// and the step `rules::decide` makes of them.
    fn decide(&self, rules: &RuleSet, sql: &str, class: Option<&Classified>, in_tx: bool) -> (PlanOut, Option<String>, Decided) {
        let window = self.txn.captures.has_window() && in_tx;
        let plan = rules.plan(sql, &self.ctx(in_tx));
        let gate = match class {
            Some(class) if window => window_gate(rules, &plan, class, &self.txn.captures),
            _ => None,
        };
        let out = PlanOut::of(&plan, sql, rules);
        (out, gate.clone(), decide(self.shadowing(rules), &self.txn.captures, plan, gate))
    }

    /// `Session::validate`, assuming every row is as the app saw it.
    fn validate(&mut self) -> Vec<String> {
        let ids: Vec<_> = self.txn.captures.window().map(|(id, _)| id.clone()).collect();
        for id in &ids {
            self.txn.captures.set_protected(id);
        }
        ids.iter().map(|id| format!("{} {}", id.table, id.key)).collect()
    }

    /// `Session::query`, or with `prepared` `Session::execute` of a
    /// prepared statement whose values the log shows written in (the text
    /// the session binds and plans).
    pub fn query(&mut self, rules: &RuleSet, sql: &str, prepared: bool, rows: Option<&[Row]>, step: &mut Step) {
        let ctl = tx_control(sql.as_bytes());
        let in_tx = self.statement_in_transaction();
        step.in_transaction = in_tx;
        step.window_before = self.txn.captures.has_window() && in_tx;
        let was_aborted = self.txn.aborted().is_some();
        if let Some(answer) = self.answered(rules, &ctl) {
            step.session = answer;
            return;
        }
        if was_aborted {
            step.events.push("thaw had rolled this transaction back: the server has none, and this statement runs".into());
        }
        let full = classify(sql.as_bytes(), MODES);
        let multi = !prepared && has_inner_semicolon(sql);
        let rules_apply = !rules.is_empty() && !self.txn.xa && (!self.txn.captures.is_empty() || rules.is_candidate(sql));
        // The session reads what a statement is only while captures exist.
        let class = (rules_apply && !self.txn.captures.is_empty()).then_some(&full);
        if !self.txn.deferred.is_empty() && !self.before_statement_with_deferred(rules, &ctl, class, sql, step) {
            return;
        }
        let mut session = SessionOut::new(Decision::Send);
        // The plan enforce mode would carry out, followed but not done (shadow mode).
        let mut shadow: Option<Box<Rewrite>> = None;
        let rewrite: Option<Box<Rewrite>> = if !rules_apply {
            let reason = if self.txn.xa { "inside an XA branch thaw plans nothing" } else { crate::rules::forward_reason(rules, sql) };
            step.plan = Some(PlanOut::NotPlanned { reason: reason.into() });
            None
        } else {
            let (plan, gate, decided) = self.decide(rules, sql, class, in_tx);
            step.plan = Some(plan);
            step.gate = gate;
            step.counts = decided.notes.iter().map(series).collect();
            match decided.step {
                SessionStep::Refuse(error) => {
                    session.decision = Decision::Refuse;
                    session.why = Some("the rule says unhandled: reject".into());
                    session.error = Some((&error).into());
                    step.session = session;
                    return;
                }
                SessionStep::Shadow(rw) => {
                    session.decision = Decision::Shadow;
                    let would: Vec<&str> = decided
                        .notes
                        .iter()
                        .filter_map(|n| match n {
                            Note::Shadow { action, .. } => Some(*action),
                            _ => None,
                        })
                        .collect();
                    if !would.is_empty() {
                        session.why = Some(format!("enforce mode would: {}", would.join(", ")));
                    }
                    shadow = rw;
                    None
                }
                SessionStep::ValidateThenSend { .. } => {
                    session.decision = Decision::ValidateThenSend;
                    // `Session::validate_or_abort`: the held writes go first.
                    self.flush_deferred("validation", step);
                    session.validates = self.validate();
                    step.events
                        .push("explain assumes the re-locked rows are as the app saw them (changed: 1213, transaction rolled back)".into());
                    // The rows are locked now: the session plans again (not counted again).
                    match self.decide(rules, sql, class, in_tx).2.step {
                        SessionStep::Send(rw) | SessionStep::ValidateThenSend { rewrite: rw, .. } => {
                            if let Some(rw) = &rw {
                                step.events.push(format!("planned again after the validation: {}", rw.action.name()));
                            }
                            rw
                        }
                        SessionStep::Refuse(_) | SessionStep::Shadow(_) => None,
                    }
                }
                SessionStep::Send(rw) => rw,
            }
        };
        // `Session::try_defer`; explain assumes @@completion_type NO_CHAIN and
        // a table without triggers (the session asks the server).
        if let Some(rw) =
            rewrite.as_ref().filter(|rw| may_defer(rules, rw, multi, self.mariadb, self.in_trans, "NO_CHAIN", &self.txn.deferred))
        {
            // `Session::defer`: answered now, sent with COMMIT (or before
            // whatever may observe it); the server sees nothing yet.
            self.held_last = true;
            self.txn.captures.apply(&rw.on_success);
            self.txn.deferred.push(Deferred::of(rw));
            session.decision = Decision::HoldBack;
            session.sends_rewritten = Some(rw.sql.clone());
            step.session = session;
            return;
        }
        // How a prepared execute reaches the server (`Session::execute`).
        let route = match &rewrite {
            _ if !prepared => None,
            Some(rw) if rw.action == Action::Unlock => Some("shadow"),
            Some(rw) if rw.action != Action::Pass => Some("text"),
            _ => Some("original"),
        };
        match route {
            Some("shadow") => step.events.push("prepared: the read runs as thaw's lock-cut shadow statement".into()),
            Some("text") => step.events.push("prepared: the guarded write is sent as a text statement".into()),
            _ => {}
        }
        session.sends_rewritten = rewrite.as_ref().filter(|rw| rw.sql != sql && route != Some("original")).map(|rw| rw.sql.clone());
        let unlock = rewrite.as_ref().filter(|rw| rw.action == Action::Unlock && rw.capture.is_some());
        let class_locking = rewrite.is_none() && matches!(class.map(|c| &c.shape), Some(Shape::Read { locking: true }));
        // Shadow mode follows the read enforce mode would unlock as if it had
        // (the read kept its lock, so nothing is held back for a missing row).
        let shadow_read = shadow.as_ref().filter(|rw| rw.action == Action::Unlock).and_then(|rw| rw.capture.clone());
        let capturing = in_tx && (unlock.is_some() || shadow_read.is_some() || !self.txn.captures.is_empty());
        let mut held_empty = false;
        match rows {
            Some(rows) => {
                step.rows = Some(RowsOut { given: rows.len(), read: capturing });
                if capturing && shadow_read.is_some() {
                    self.read_rows(rules, &full, shadow_read.clone(), Seen::Locked, rows, step);
                } else if capturing {
                    let seen = if class_locking { Seen::Locked } else { Seen::Plain };
                    self.read_rows(rules, &full, unlock.and_then(|rw| rw.capture.clone()), seen, rows, step);
                    held_empty = unlock.is_some() && rows.is_empty();
                }
            }
            None if unlock.is_some() || shadow_read.is_some() => {
                step.events.push("no `-- rows:` for this read: explain does not know what it returned, so nothing is captured".into())
            }
            None => {}
        }
        if held_empty {
            // Get-or-create: as the app wrote it, the gap lock is taken as direct.
            session.sends_rewritten = None;
            step.events.push(
                "the unlocked read found no row: thaw sends it again as the app wrote it (locking), and the app gets that result".into(),
            );
        } else if let Some(rw) = rewrite.as_ref().filter(|_| route != Some("original")).or(shadow.as_ref()) {
            self.txn.captures.apply(&rw.on_success);
        }
        forget_unproven(rules, rewrite.as_deref().or(shadow.as_deref()), class, &mut self.txn.captures);
        step.session = session;
        self.server_after(&ctl, &full, sql);
        self.statement_done(&ctl);
    }

    /// `Session::before_statement_with_deferred`: COMMIT sends the held
    /// writes with it, ROLLBACK drops them, anything that may observe them
    /// sends them first. False: the session answered the statement itself.
    fn before_statement_with_deferred(
        &mut self,
        rules: &RuleSet,
        ctl: &TxControl,
        class: Option<&Classified>,
        sql: &str,
        step: &mut Step,
    ) -> bool {
        match ctl {
            // COMMIT RELEASE, AND CHAIN: the held writes are sent first, then it goes as sent.
            TxControl::Commit { chain: false } if is_plain_commit(sql.as_bytes()) => {
                let n = std::mem::take(&mut self.txn.deferred).len();
                step.plan = Some(PlanOut::NotPlanned { reason: "a COMMIT with held-back writes".into() });
                step.session = SessionOut::new(Decision::Send);
                step.session.why = Some(format!(
                    "the {n} held-back write(s) and the COMMIT run as one compound statement (BEGIN NOT ATOMIC ... COMMIT; END): a guard that fails stops it, nothing commits, and the app gets the violation here"
                ));
                self.server_after(ctl, &classify(b"COMMIT", MODES), "COMMIT");
                self.statement_done(ctl);
                return false;
            }
            TxControl::Rollback { .. } => {
                step.events.push(format!("the {} held-back write(s) are dropped: the server never saw them", self.txn.deferred.len()));
                self.txn.deferred.clear();
                return true;
            }
            _ => {}
        }
        if let Some(cause) = flush_cause(rules, ctl, class, sql.as_bytes(), self.held_last) {
            self.flush_deferred(cause, step);
        }
        true
    }

    /// `Session::flush_deferred`, assuming each held write matches its row.
    fn flush_deferred(&mut self, cause: &str, step: &mut Step) {
        let writes = std::mem::take(&mut self.txn.deferred);
        if writes.is_empty() {
            return;
        }
        step.events.push(format!("sends the {} held-back write(s) first ({cause})", writes.len()));
        for _ in writes {
            self.statement_done(&TxControl::None);
        }
    }

    /// The rows of a result through the session's capture sink
    /// (`Session::relay_capturing`).
    fn read_rows(&mut self, rules: &RuleSet, class: &Classified, unlocked: Option<CaptureSpec>, seen: Seen, rows: &[Row], step: &mut Step) {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in rows.iter().flatten() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let fallback = unlocked.as_ref().map(|s| s.table.clone());
        let mut rc = ResultCapture::new(rules, std::mem::take(&mut self.txn.captures), unlocked, seen, false);
        rc.result_set();
        for n in &names {
            let values: Vec<_> = rows.iter().filter_map(|r| r.iter().find(|(c, _)| c == n).map(|(_, v)| v)).collect();
            let o = origin(class, self.schema.as_deref(), fallback.as_deref(), n);
            rc.column(&column_def(&o, n, meta(&values)));
        }
        for r in rows {
            rc.row(&row_packet(&names, r));
        }
        let spoiled = rc.spoiled || rc.unlocked_rows > 1;
        let mut captures = rc.captures;
        if spoiled && let Some(spec) = &rc.unlocked {
            step.events
                .push(format!("the unlocked read could not be captured (one row expected): writes to {} rows are validated", spec.table));
            captures.mark_uncertain(None, &spec.table);
        }
        self.txn.captures = captures;
    }

    /// The server's status flags after a statement that succeeded.
    fn server_after(&mut self, ctl: &TxControl, class: &Classified, sql: &str) {
        match ctl {
            TxControl::Begin => self.in_trans = true,
            // With autocommit off the server opens the next transaction at once.
            TxControl::ImplicitCommit => self.in_trans = !self.autocommit,
            TxControl::Commit { chain } | TxControl::Rollback { chain } => self.in_trans = *chain,
            TxControl::Xa { start } => self.in_trans = *start,
            TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_) => {}
            TxControl::None => {
                if let Some(on) = set_autocommit(sql) {
                    // Switching autocommit on commits what is open.
                    if on && !self.autocommit {
                        self.in_trans = false;
                    }
                    self.autocommit = on;
                    return;
                }
                match &class.shape {
                    Shape::ImplicitCommit => self.in_trans = false,
                    Shape::Read { .. } | Shape::Write { .. } if !class.relations.is_empty() => self.in_trans |= !self.autocommit,
                    Shape::Unknown(_) => self.in_trans |= !self.autocommit,
                    _ => {}
                }
            }
        }
    }

    /// `Session::after_statement`: the transaction state takes the statement's end.
    fn statement_done(&mut self, ctl: &TxControl) {
        // The server ran a statement after any held-back write was answered.
        self.held_last = false;
        self.txn.statement_done(StatementEnd {
            ctl,
            err: None,
            in_trans: self.in_trans,
            saw_idle: false,
            lost: false,
            sent: &[],
            digest: 0,
            replayable: false,
            record_limit: 0,
        });
    }

    pub fn after(&self) -> super::report::After {
        super::report::After {
            transaction: match self.txn.phase {
                Phase::Idle => "idle",
                Phase::Open => "open",
                Phase::Aborted(_) => "aborted",
            },
            autocommit: self.autocommit,
            window: self.txn.captures.has_window(),
            captures: self.txn.captures.rows().map(|(id, r)| RowOut::of(id, r)).collect(),
            held_back: self.txn.deferred.iter().map(|d| d.sql.clone()).collect(),
        }
    }
}

/// How the session is run: backend and process-wide shadow mode.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub mariadb: bool,
    pub shadow_all: bool,
}

/// The series a decision counts, as `/metrics` names them.
fn series(n: &Note) -> String {
    match n {
        Note::Unhandled { table } => format!("thaw_statements_unhandled_total{{table=\"{table}\"}}"),
        Note::Rewritten { rule, action } => format!("thaw_statements_rewritten_total{{rule=\"{rule}\",action=\"{action}\"}}"),
        Note::Shadow { rule, action } => format!("thaw_shadow_actions_total{{rule=\"{rule}\",action=\"{action}\"}}"),
    }
}

/// What `Session::abort_diverged` answers.
fn deadlock() -> ErrorOut {
    ErrorOut {
        code: 1213,
        sqlstate: "40001".into(),
        message: "thaw: Deadlock found when trying to get lock; a row this transaction read was changed by another session; try restarting transaction".into(),
    }
}

/// As `session::query`'s: a `;` followed by more statement text (the
/// client enabled multi-statements to send it).
fn has_inner_semicolon(sql: &str) -> bool {
    sql.split_once(';').is_some_and(|(_, rest)| rest.bytes().any(|b| !b.is_ascii_whitespace() && b != b';'))
}

/// `SET [SESSION] autocommit = 0|1|ON|OFF` (also `@@autocommit`): the new value.
fn set_autocommit(sql: &str) -> Option<bool> {
    let lower = sql.trim().trim_end_matches(';').to_ascii_lowercase();
    let rest = lower.strip_prefix("set")?.strip_prefix(|c: char| c.is_whitespace())?;
    let mut found = None;
    for part in rest.split(',') {
        let p = part.trim();
        let p = p.strip_prefix("session ").or_else(|| p.strip_prefix("local ")).unwrap_or(p).trim_start();
        let p = p.strip_prefix("@@session.").or_else(|| p.strip_prefix("@@local.")).or_else(|| p.strip_prefix("@@")).unwrap_or(p);
        let Some(v) = p.strip_prefix("autocommit") else { continue };
        let v = v.trim_start();
        let v = v.strip_prefix(":=").or_else(|| v.strip_prefix('=')).map(str::trim)?;
        found = match v.trim_matches(['\'', '"']) {
            "1" | "on" | "true" => Some(true),
            "0" | "off" | "false" => Some(false),
            _ => None,
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocommit_settings() {
        assert_eq!(set_autocommit("SET AUTOCOMMIT = 0"), Some(false));
        assert_eq!(set_autocommit("set session autocommit=ON"), Some(true));
        assert_eq!(set_autocommit("SET @@autocommit := 1;"), Some(true));
        assert_eq!(set_autocommit("SET NAMES utf8mb4, @@session.autocommit = OFF"), Some(false));
        assert_eq!(set_autocommit("SET @x = 1"), None);
        assert_eq!(set_autocommit("SELECT @@autocommit"), None);
        assert_eq!(set_autocommit("SET autocommit = @v"), None, "unknown: the model keeps what it had");
    }
}
