//! Contention you can see: per shape (literal-free fingerprint) of locking
//! read, how often it ran, how long it took (its lock wait included), and
//! how often a lock error (1205, 1213) followed in its transaction, whether
//! thaw hid it by a retry or the app got it. Tells an operator which tables
//! to govern before a rule exists; `/contention` lists the top shapes.
//!
//! The label set is bounded: the first [`MAX_SHAPES`] shapes get their own
//! series, every later one counts as `other`.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use super::metrics::{Labels, labels};

pub const MAX_SHAPES: usize = 64;
/// Longest shape text kept (labels and the endpoint).
const MAX_SHAPE_CHARS: usize = 160;

#[derive(Debug, Default, Clone)]
struct Stats {
    table: String,
    reads: u64,
    seconds: f64,
    lock_errors: HashMap<u16, u64>,
}

#[derive(Debug, Default)]
pub struct Contention {
    shapes: Mutex<HashMap<String, Stats>>,
    pub reads: Family<Labels, Counter>,
    pub read_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub lock_errors: Family<Labels, Counter>,
}

impl Contention {
    /// The shape's key: its text, or `other` once the table is full.
    fn key(&self, shape: &str, table: &str) -> String {
        let mut text: String = shape.chars().take(MAX_SHAPE_CHARS).collect();
        if text.len() < shape.len() {
            text.push('…');
        }
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if !shapes.contains_key(&text) && shapes.len() >= MAX_SHAPES {
            text = "other".into();
        }
        shapes.entry(text.clone()).or_insert_with(|| Stats { table: table.to_string(), ..Stats::default() });
        text
    }

    /// Register a locking read's shape before it runs: the key to report on.
    pub fn shape(&self, shape: &str, table: &str) -> String {
        self.key(shape, table)
    }

    /// A locking read ran and took `seconds` (lock wait included).
    pub fn read(&self, shape: &str, table: &str, seconds: f64) -> String {
        let key = self.key(shape, table);
        self.ran(&key, seconds);
        key
    }

    /// The read registered as `key` ran and took `seconds`.
    pub fn ran(&self, key: &str, seconds: f64) {
        let table = {
            let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = shapes.get_mut(key) else { return };
            s.reads += 1;
            s.seconds += seconds;
            s.table.clone()
        };
        let l = labels([("table", table), ("shape", key.to_string())]);
        self.reads.get_or_create(&l).inc();
        self.read_seconds.get_or_create(&l).inc_by(seconds);
    }

    /// A lock error hit a transaction that ran the locking read `key` (as
    /// returned by [`read`](Self::read)).
    pub fn lock_error(&self, key: &str, code: u16) {
        let table = {
            let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = shapes.get_mut(key) else { return };
            *s.lock_errors.entry(code).or_default() += 1;
            s.table.clone()
        };
        self.lock_errors.get_or_create(&labels([("table", table), ("shape", key.to_string()), ("code", code.to_string())])).inc();
    }

    /// The shapes by lock errors, then reads, as JSON.
    pub fn top_json(&self, limit: usize) -> String {
        let shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut v: Vec<(String, Stats)> = shapes.into_iter().collect();
        v.sort_by(|a, b| {
            let errs = |s: &Stats| s.lock_errors.values().sum::<u64>();
            errs(&b.1).cmp(&errs(&a.1)).then(b.1.reads.cmp(&a.1.reads)).then(a.0.cmp(&b.0))
        });
        let mut out = String::from("{\"shapes\":[");
        for (i, (shape, s)) in v.iter().take(limit).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut codes: Vec<(&u16, &u64)> = s.lock_errors.iter().collect();
            codes.sort();
            let errors = codes.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect::<Vec<_>>().join(",");
            let _ = write!(
                out,
                "{{\"shape\":{},\"table\":{},\"reads\":{},\"seconds\":{:.6},\"lock_errors\":{{{errors}}}}}",
                json_str(shape),
                json_str(&s.table),
                s.reads,
                s.seconds
            );
        }
        out.push_str("]}\n");
        out
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_counted_and_bounded() {
        let c = Contention::default();
        let k = c.read("SELECT * FROM t WHERE id = ? FOR UPDATE", "t", 0.5);
        c.read("SELECT * FROM t WHERE id = ? FOR UPDATE", "t", 0.25);
        c.lock_error(&k, 1205);
        c.lock_error(&k, 1205);
        c.lock_error(&k, 1213);
        for i in 0..MAX_SHAPES + 5 {
            c.read(&format!("SELECT {i} FROM u FOR UPDATE"), "u", 0.0);
        }
        let json = c.top_json(3);
        assert!(json.starts_with("{\"shapes\":[{\"shape\":\"SELECT * FROM t WHERE id = ? FOR UPDATE\",\"table\":\"t\",\"reads\":2,\"seconds\":0.750000,\"lock_errors\":{\"1205\":2,\"1213\":1}}"), "{json}");
        assert!(c.top_json(1000).contains("\"shape\":\"other\""));
        // MAX_SHAPES shapes and the `other` bucket.
        assert_eq!(c.shapes.lock().unwrap().len(), MAX_SHAPES + 1);
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
