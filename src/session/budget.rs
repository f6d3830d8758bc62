//! The global buffered-bytes budget: every connection that buffers a client
//! packet over 64 KiB takes its size from one shared pool first. When the
//! pool is spent, the packet is streamed to the server instead (unplanned),
//! so memory stays bounded whatever the clients send.
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    gauge: Gauge,
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("limit", &self.limit).field("used", &self.used()).finish()
    }
}

impl Budget {
    pub fn new(limit: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Budget { limit, used: AtomicUsize::new(0), gauge })
    }

    /// Take `bytes`, or `None` when that would pass the limit.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|&u| u <= self.limit)).ok()?;
        self.gauge.inc_by(bytes as i64);
        Some(Reservation { budget: self.clone(), bytes })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.gauge.dec_by(self.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_are_given_back() {
        let gauge = Gauge::default();
        let b = Budget::new(100, gauge.clone());
        let r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let r2 = b.try_reserve(40).unwrap();
        assert_eq!((b.used(), gauge.get()), (100, 100));
        drop(r1);
        assert_eq!((b.used(), gauge.get()), (40, 40));
        assert!(b.try_reserve(usize::MAX).is_none(), "no overflow");
        drop(r2);
        assert_eq!((b.used(), gauge.get()), (0, 0));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let b = Budget::new(1000, Gauge::default());
        let held: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| (0..100).filter_map(|_| b.try_reserve(7)).collect::<Vec<_>>())).collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 1000 / 7);
        assert!(b.used() <= 1000);
    }
}
