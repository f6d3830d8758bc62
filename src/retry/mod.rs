//! Lock-error recovery: when a failed command may be re-sent (statement
//! retry) and what a transaction must have recorded to be replayed.
//! Pure policy and bookkeeping; the session does the IO.
pub mod record;

use crate::config::RetryConfig;
use std::time::Duration;

pub use record::{Recorder, ResponseDigest};

pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
pub const DEADLOCK: u16 = 1213;
pub const QUERY_INTERRUPTED: u16 = 1317;

/// What to do with an ERR that was the first packet of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Only the statement was rolled back: re-send it.
    RetryStatement,
    /// The whole transaction was rolled back: replay it, then re-send.
    ReplayTransaction,
    /// Give the client the error.
    None,
}

/// Facts about the command and connection the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    pub code: u16,
    /// The statement ran inside an explicit or implicit transaction.
    pub in_transaction: bool,
    /// `Some(on)` once read from the backend; `None` means unknown: no statement retry.
    pub rollback_on_timeout: Option<bool>,
    /// Multi-statement text, CALL, LOAD DATA, an EXECUTE fed by SEND_LONG_DATA, COMMIT.
    pub retry_unsafe: bool,
}

pub fn classify(cfg: &RetryConfig, s: Situation) -> Recovery {
    if !cfg.enabled || s.retry_unsafe || s.code == QUERY_INTERRUPTED {
        return Recovery::None;
    }
    let whole_tx_gone = match s.code {
        DEADLOCK => true,
        LOCK_WAIT_TIMEOUT => match s.rollback_on_timeout {
            Some(on) => on,
            None => return Recovery::None,
        },
        _ => false,
    };
    if whole_tx_gone {
        if !s.in_transaction {
            // An autocommit statement is its own transaction: re-sending it is the replay.
            return if cfg.errors.contains(&s.code) || s.code == DEADLOCK { Recovery::RetryStatement } else { Recovery::None };
        }
        return if cfg.replay { Recovery::ReplayTransaction } else { Recovery::None };
    }
    if cfg.errors.contains(&s.code) { Recovery::RetryStatement } else { Recovery::None }
}

/// Capped exponential backoff with full jitter; `None` when attempts or the
/// time budget are used up. `elapsed` is the time since the command was
/// first sent, lock waits included; a retry started within the budget can
/// still take one more `innodb_lock_wait_timeout`.
pub fn backoff(cfg: &RetryConfig, attempt: u32, elapsed: Duration) -> Option<Duration> {
    if attempt >= cfg.attempts {
        return None;
    }
    let exp = cfg.backoff_base_ms.saturating_mul(1u64 << attempt.min(20));
    let cap = exp.min(cfg.backoff_cap_ms).max(1);
    let wait = Duration::from_millis(rand::random_range(cap / 2..=cap));
    let budget = Duration::from_millis(cfg.budget_ms);
    if elapsed + wait > budget {
        return None;
    }
    Some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sit(code: u16, in_tx: bool, rot: Option<bool>) -> Situation {
        Situation { code, in_transaction: in_tx, rollback_on_timeout: rot, retry_unsafe: false }
    }

    #[test]
    fn lock_wait_timeout_retries_the_statement_when_only_it_was_rolled_back() {
        let c = RetryConfig::default();
        assert_eq!(classify(&c, sit(1205, true, Some(false))), Recovery::RetryStatement);
        assert_eq!(classify(&c, sit(1205, true, Some(true))), Recovery::ReplayTransaction);
        assert_eq!(classify(&c, sit(1205, false, Some(true))), Recovery::RetryStatement);
        assert_eq!(classify(&c, sit(1205, true, None)), Recovery::None, "never guess the server setting");
    }

    #[test]
    fn deadlock_replays_and_unsafe_commands_never_retry() {
        let c = RetryConfig::default();
        assert_eq!(classify(&c, sit(1213, true, None)), Recovery::ReplayTransaction);
        assert_eq!(classify(&c, sit(1213, false, None)), Recovery::RetryStatement);
        assert_eq!(classify(&c, sit(1317, true, Some(false))), Recovery::None);
        assert_eq!(classify(&c, sit(1062, true, Some(false))), Recovery::None);
        let mut s = sit(1205, true, Some(false));
        s.retry_unsafe = true;
        assert_eq!(classify(&c, s), Recovery::None);
        let off = RetryConfig { enabled: false, ..RetryConfig::default() };
        assert_eq!(classify(&off, sit(1205, true, Some(false))), Recovery::None);
    }

    #[test]
    fn backoff_is_capped_and_bounded_by_attempts_and_budget() {
        let c = RetryConfig { attempts: 3, backoff_base_ms: 100, backoff_cap_ms: 250, budget_ms: 1000, ..RetryConfig::default() };
        for attempt in 0..3 {
            let w = backoff(&c, attempt, Duration::ZERO).unwrap();
            assert!(w <= Duration::from_millis(250), "{w:?}");
        }
        assert_eq!(backoff(&c, 3, Duration::ZERO), None);
        assert_eq!(backoff(&c, 1, Duration::from_millis(990)), None);
    }
}
