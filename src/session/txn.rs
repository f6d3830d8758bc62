//! The transaction as thaw holds it: phase, captures with their savepoint
//! layers, and the replay recording. Every change goes through the
//! transition methods here, driven by what was sent (its [`TxControl`]) and
//! what the server answered (status flags, error code).
use crate::retry::Recorder;
use crate::rules::{Captures, ErrorResponse};
use crate::sql::TxControl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Open,
    /// thaw rolled the transaction back; every statement gets this error
    /// until the app sends ROLLBACK (or COMMIT, which gets it once more).
    Aborted(ErrorResponse),
}

#[derive(Debug)]
pub struct Txn {
    pub phase: Phase,
    pub captures: Captures,
    savepoints: Vec<(String, Captures)>,
    pub recorder: Recorder,
    /// An XA branch is open: thaw unlocks nothing in it (its rollback is
    /// XA ROLLBACK with the app's xid, which thaw cannot issue safely).
    pub xa: bool,
    /// Guarded writes answered and held back to COMMIT, in order.
    pub deferred: Vec<super::defer::Deferred>,
    /// Shapes of the locking reads this transaction ran (contention metrics).
    pub locking_shapes: Vec<String>,
    /// The last statement the app sent was a held-back write: the server's
    /// ROW_COUNT() and warnings are still the statement's before it.
    pub held_last: bool,
}

/// What a statement the server ran means for the transaction.
pub struct StatementEnd<'a> {
    pub ctl: &'a TxControl,
    pub err: Option<u16>,
    /// IN_TRANS in the last status the server sent.
    pub in_trans: bool,
    /// Some status during the response had IN_TRANS clear (a commit
    /// somewhere in a multi-result response).
    pub saw_idle: bool,
    /// The server rolled the transaction back (1213, 1205 with
    /// innodb_rollback_on_timeout).
    pub lost: bool,
    /// The command as sent and its response digest, for the replay recording.
    pub sent: &'a [u8],
    pub digest: u64,
    pub replayable: bool,
    pub record_limit: usize,
}

impl Txn {
    pub fn new(fold_case: bool) -> Self {
        Txn {
            phase: Phase::Idle,
            captures: Captures::with_fold_case(fold_case),
            savepoints: Vec::new(),
            recorder: Recorder::default(),
            xa: false,
            deferred: Vec::new(),
            locking_shapes: Vec::new(),
            held_last: false,
        }
    }

    /// The transaction is over (committed, rolled back, lost, reset).
    pub fn end(&mut self) {
        self.phase = Phase::Idle;
        self.captures.clear();
        self.savepoints.clear();
        self.recorder.clear();
        self.deferred.clear();
        self.locking_shapes.clear();
        self.held_last = false;
    }

    /// thaw rolled the transaction back itself; `why` answers what follows.
    pub fn abort(&mut self, why: ErrorResponse) {
        self.end();
        self.phase = Phase::Aborted(why);
    }

    pub fn aborted(&self) -> Option<&ErrorResponse> {
        match &self.phase {
            Phase::Aborted(e) => Some(e),
            _ => None,
        }
    }

    /// A savepoint statement the server ran. Names compare as the server
    /// compares them (utf8mb3_general_ci); a ROLLBACK TO whose savepoint
    /// thaw cannot tell apart for sure, or never saw set, leaves every row's
    /// last-seen values unknown.
    pub fn savepoint_done(&mut self, ctl: &TxControl) {
        match ctl {
            TxControl::Savepoint(n) => {
                let fold = savepoint_fold(n);
                self.savepoints.retain(|(s, _)| fold.is_none() || savepoint_fold(s) != fold);
                self.savepoints.push((n.clone(), self.captures.clone()));
            }
            TxControl::RollbackTo(n) => match self.savepoint_position(n) {
                Some(pos) => {
                    let snap = self.savepoints[pos].1.clone();
                    self.captures.rollback_to(&snap);
                    self.savepoints.truncate(pos + 1);
                }
                None => self.captures.rollback_to_unknown(),
            },
            TxControl::Release(n) => match self.savepoint_position(n) {
                Some(pos) => self.savepoints.truncate(pos),
                // Which layers the server dropped is not known: none is trusted.
                None => self.forget_savepoints(),
            },
            _ => {}
        }
    }

    /// Savepoints may have been set, moved or rolled back to where thaw could
    /// not see it (a multi-statement packet it could not split, a CALL, an
    /// executable comment): a ROLLBACK TO is then one to an unknown savepoint.
    pub fn forget_savepoints(&mut self) {
        self.savepoints.clear();
    }

    /// The layer a savepoint name names on the server, when thaw can tell.
    fn savepoint_position(&self, n: &str) -> Option<usize> {
        let fold = savepoint_fold(n)?;
        let mut found = None;
        for (i, (s, _)) in self.savepoints.iter().enumerate() {
            match savepoint_fold(s) {
                Some(f) if f == fold => found = Some(i),
                Some(_) => {}
                // A name thaw cannot fold may be this one.
                None => return None,
            }
        }
        found
    }

    pub fn statement_done(&mut self, e: StatementEnd<'_>) {
        let ok = e.err.is_none();
        if e.lost {
            self.end();
            return;
        }
        let was_open = self.phase == Phase::Open;
        // Savepoint statements never end a transaction; with autocommit off a
        // SAVEPOINT may come before the server reports one (Django's atomic()).
        let savepoint = matches!(e.ctl, TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_));
        let mut ended = !savepoint && (!e.in_trans || e.saw_idle);
        if ok {
            match e.ctl {
                // BEGIN inside a transaction commits it first.
                TxControl::Begin => {
                    self.end();
                    ended = false;
                }
                TxControl::Commit { .. } | TxControl::Rollback { .. } | TxControl::ImplicitCommit => ended = true,
                TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_) => self.savepoint_done(e.ctl),
                TxControl::Xa { start } => self.xa = *start,
                TxControl::None => {}
            }
        }
        if ended {
            self.end();
            // COMMIT AND CHAIN: a new transaction is open, with nothing recorded yet.
            if e.in_trans && !e.saw_idle {
                self.phase = Phase::Open;
            }
            return;
        }
        if !was_open {
            self.recorder.clear();
        }
        self.phase = Phase::Open;
        if e.replayable {
            self.recorder.push(e.sent, e.digest, e.record_limit);
        } else {
            self.recorder.mark("a statement whose session effects a replay cannot reproduce");
        }
    }
}

/// A savepoint name as utf8mb3_general_ci compares it (`é` is `E`, `ß` is
/// `S`), for the characters thaw knows the folding of; `None` for others.
fn savepoint_fold(name: &str) -> Option<String> {
    name.chars()
        .map(|c| {
            if c.is_ascii() {
                return Some(c.to_ascii_uppercase());
            }
            Some(match c {
                'À'..='Å' | 'à'..='å' => 'A',
                'Ç' | 'ç' => 'C',
                'È'..='Ë' | 'è'..='ë' => 'E',
                'Ì'..='Ï' | 'ì'..='ï' => 'I',
                'Ñ' | 'ñ' => 'N',
                'Ò'..='Ö' | 'ò'..='ö' => 'O',
                'Ù'..='Ü' | 'ù'..='ü' => 'U',
                'Ý' | 'ý' | 'ÿ' => 'Y',
                'ß' => 'S',
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ColMeta, Seen};

    fn end<'a>(ctl: &'a TxControl, in_trans: bool) -> StatementEnd<'a> {
        StatementEnd {
            ctl,
            err: None,
            in_trans,
            saw_idle: false,
            lost: false,
            sent: b"\x03X",
            digest: 1,
            replayable: true,
            record_limit: 1 << 20,
        }
    }

    fn capture(t: &mut Txn, v: &[u8], seen: Seen) {
        let id = t.captures.id("db", "users", "8");
        t.captures.record(id, "id", ColMeta::default(), &[("frozen_balance".into(), ColMeta::default(), Some(v.to_vec()))], seen);
    }

    fn frozen(t: &Txn) -> Option<Option<&str>> {
        t.captures.value(&t.captures.id("db", "users", "8"), "frozen_balance")
    }

    #[test]
    fn begin_inside_a_transaction_commits_it() {
        let mut t = Txn::new(false);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"1", Seen::Unlocked);
        assert_eq!(t.recorder.entries().map(<[_]>::len), Some(1));
        t.statement_done(end(&TxControl::Begin, true));
        assert!(t.captures.is_empty());
        assert_eq!(t.recorder.entries().map(<[_]>::len), Some(1), "only BEGIN is recorded");
        assert_eq!(t.phase, Phase::Open);
    }

    #[test]
    fn commit_and_chain_starts_empty() {
        let mut t = Txn::new(false);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"1", Seen::Unlocked);
        t.statement_done(end(&TxControl::Commit { chain: true }, true));
        assert!(t.captures.is_empty());
        assert_eq!(t.recorder.entries().map_or(0, <[_]>::len), 0);
        assert_eq!(t.phase, Phase::Open);
    }

    #[test]
    fn savepoints_restore_and_merge() {
        let mut t = Txn::new(false);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"0", Seen::Unlocked);
        t.statement_done(end(&TxControl::Savepoint("A".into()), true));
        let id = t.captures.id("db", "users", "8");
        t.captures.apply(&[crate::rules::CaptureUpdate::Set {
            schema: "db".into(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("28".into()),
        }]);
        assert_eq!(frozen(&t), Some(Some("28")));
        t.statement_done(end(&TxControl::RollbackTo("a".into()), true));
        assert_eq!(frozen(&t), Some(Some("0")), "the write after the savepoint is undone");
        assert!(!t.captures.get(&id).unwrap().uncertain);
        // A read after the savepoint may have shown a newer value: uncertain.
        capture(&mut t, b"5", Seen::Plain);
        t.statement_done(end(&TxControl::RollbackTo("A".into()), true));
        assert!(t.captures.get(&id).unwrap().uncertain);
        t.statement_done(end(&TxControl::Release("A".into()), true));
        t.statement_done(end(&TxControl::RollbackTo("A".into()), true));
        assert!(t.captures.get(&id).is_some(), "released: ROLLBACK TO fails on the server, nothing changes");
    }

    #[test]
    fn savepoint_names_compare_as_the_server_does() {
        assert_eq!(savepoint_fold("é"), savepoint_fold("E"));
        assert_eq!(savepoint_fold("Straße"), savepoint_fold("strase"));
        assert_ne!(savepoint_fold("a "), savepoint_fold("a"));
        assert_eq!(savepoint_fold("Ø"), None);
        let mut t = Txn::new(false);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"0", Seen::Unlocked);
        let id = t.captures.id("db", "users", "8");
        t.statement_done(end(&TxControl::Savepoint("é".into()), true));
        t.captures.apply(&[crate::rules::CaptureUpdate::Set {
            schema: "db".into(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("28".into()),
        }]);
        t.statement_done(end(&TxControl::RollbackTo("E".into()), true));
        assert_eq!(frozen(&t), Some(Some("0")), "ROLLBACK TO e is ROLLBACK TO é");
        t.statement_done(end(&TxControl::Savepoint("Ø".into()), true));
        t.statement_done(end(&TxControl::RollbackTo("O".into()), true));
        let row = t.captures.get(&id).unwrap();
        assert!(row.uncertain && !row.protected, "a savepoint thaw cannot tell apart: the values are not known");
    }

    #[test]
    fn lost_and_ended() {
        let mut t = Txn::new(false);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"0", Seen::Unlocked);
        t.statement_done(StatementEnd { lost: true, err: Some(1213), ..end(&TxControl::None, true) });
        assert!(t.captures.is_empty() && t.phase == Phase::Idle);
        t.statement_done(end(&TxControl::None, true));
        capture(&mut t, b"0", Seen::Unlocked);
        t.statement_done(StatementEnd { saw_idle: true, ..end(&TxControl::None, true) });
        assert!(t.captures.is_empty(), "a commit inside a multi-result response ends it");
        t.abort(ErrorResponse { code: 1213, sqlstate: "40001".into(), message: "x".into() });
        assert!(t.aborted().is_some());
    }
}
