//! Keeping a bad moment cheap: accept back-off (EMFILE must not spin a
//! listener) and WARN lines limited to one per interval, with a count of the
//! ones left out.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Repeated WARNs: the first is logged, then at most one per `every`.
pub struct WarnLimiter {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    pub const fn new(every: Duration) -> Self {
        WarnLimiter { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed)`: log now, mentioning how many lines were left out
    /// since the last one. `None`: leave this one out.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// Accept failures back off exponentially (5 ms doubling to 1 s); a success resets.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const CAP: Duration = Duration::from_secs(1);

    pub fn fail(&mut self) -> Duration {
        let d = self.next.unwrap_or(Self::FIRST);
        self.next = Some((d * 2).min(Self::CAP));
        d
    }

    pub fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_limiter_logs_first_then_one_per_interval_with_the_count() {
        let w = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.check_at(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(w.check_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(w.check_at(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(w.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(w.check_at(t0 + Duration::from_secs(21)), Some(1));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let steps: Vec<u64> = (0..10).map(|_| b.fail().as_millis() as u64).collect();
        assert_eq!(steps, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(5));
    }
}
