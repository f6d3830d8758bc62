//! Recording a transaction for replay: the commands as sent to the server and
//! a digest of each response as the client saw it. Bounded: past the limit,
//! or after anything whose effect a replay could not reproduce, the
//! transaction is marked unreplayable and recording stops.
use std::hash::Hasher;

/// Digest of every packet of one response (insert ids, affected rows, rows, errors).
#[derive(Debug, Default, Clone)]
pub struct ResponseDigest {
    hasher: std::collections::hash_map::DefaultHasher,
    /// Bytes not yet hashed: the hasher is fed whole 8-byte words, so a
    /// packet hashes the same whether it came whole or streamed in pieces.
    tail: [u8; 8],
    tail_len: usize,
}

impl ResponseDigest {
    pub fn add(&mut self, packet: &[u8]) {
        self.bytes(packet);
        self.end_packet(packet.len());
    }

    /// Part of a packet, in order (a streamed packet).
    pub fn bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (8 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len == 8 {
                self.hasher.write_u64(u64::from_le_bytes(self.tail));
                self.tail_len = 0;
            }
        }
    }

    /// The packet whose bytes were given ends; `len` is its length.
    pub fn end_packet(&mut self, len: usize) {
        for &b in &self.tail[..self.tail_len] {
            self.hasher.write_u8(b);
        }
        self.tail_len = 0;
        self.hasher.write_usize(len);
    }

    pub fn finish(&self) -> u64 {
        self.hasher.finish()
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub command: Vec<u8>,
    pub digest: u64,
}

#[derive(Debug, Default)]
pub struct Recorder {
    entries: Vec<Recorded>,
    bytes: usize,
    /// Why this transaction cannot be replayed, once something made it so.
    pub unreplayable: Option<&'static str>,
}

impl Recorder {
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.unreplayable = None;
    }

    pub fn push(&mut self, command: &[u8], digest: u64, limit: usize) {
        if self.unreplayable.is_some() {
            return;
        }
        self.bytes += command.len();
        if self.bytes > limit {
            self.mark("transaction larger than retry.replay_max_bytes");
            return;
        }
        self.entries.push(Recorded { command: command.to_vec(), digest });
    }

    pub fn mark(&mut self, why: &'static str) {
        if self.unreplayable.is_none() {
            self.unreplayable = Some(why);
        }
        self.entries.clear();
    }

    pub fn entries(&self) -> Option<&[Recorded]> {
        match self.unreplayable {
            None if !self.entries.is_empty() => Some(&self.entries),
            _ => None,
        }
    }
}

/// Statements a replay reproduces exactly when their responses match; anything
/// else (SET, USE, temporary tables, LOCK TABLES, DDL, user-variable
/// assignment) makes the transaction unreplayable rather than risking a
/// different session state.
pub fn replayable_statement(sql: &[u8]) -> bool {
    let word = first_keyword(sql);
    let ok =
        matches!(word.as_str(), "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "BEGIN" | "START" | "WITH" | "VALUES" | "TABLE");
    ok && !assigns_variables(sql) && !contains_ci(sql, b"temporary")
}

/// The statement assigns user variables (`@v := ...`). The server does not
/// undo an assignment when a lock wait timeout rolls the statement back, so
/// a re-send would assign again where the app saw one failed statement.
pub fn assigns_variables(sql: &[u8]) -> bool {
    sql.windows(2).any(|w| w == b":=")
}

/// First keyword of a statement, skipping whitespace, comments and `(`.
pub fn first_keyword(sql: &[u8]) -> String {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b'(' => i += 1,
            b'/' if sql.get(i + 1) == Some(&b'*') && sql.get(i + 2) != Some(&b'!') => {
                i = find(sql, i + 2, b"*/").map_or(sql.len(), |e| e + 2);
            }
            b'#' => i = find(sql, i, b"\n").map_or(sql.len(), |e| e + 1),
            b'-' if sql.get(i + 1) == Some(&b'-') => i = find(sql, i, b"\n").map_or(sql.len(), |e| e + 1),
            _ => break,
        }
    }
    let end = sql[i..].iter().position(|b| !b.is_ascii_alphabetic() && *b != b'_').map_or(sql.len(), |e| i + e);
    String::from_utf8_lossy(&sql[i..end]).to_ascii_uppercase()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_same_whole_or_in_pieces() {
        let packet: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = ResponseDigest::default();
        whole.add(&packet);
        whole.add(b"end");
        for cut in [1, 3, 8, 9, 500, 999] {
            let mut pieces = ResponseDigest::default();
            pieces.bytes(&packet[..cut]);
            pieces.bytes(&packet[cut..]);
            pieces.end_packet(packet.len());
            pieces.add(b"end");
            assert_eq!(pieces.finish(), whole.finish(), "cut at {cut}");
        }
        let mut other = ResponseDigest::default();
        other.add(&packet[..999]);
        other.add(b"end");
        assert_ne!(other.finish(), whole.finish());
    }

    #[test]
    fn keywords_skip_comments() {
        assert_eq!(first_keyword(b"  /* x */ select 1"), "SELECT");
        assert_eq!(first_keyword(b"-- c\nUPDATE t SET a=1"), "UPDATE");
        assert_eq!(first_keyword(b"(SELECT 1)"), "SELECT");
        assert_eq!(first_keyword(b"/*!40101 SET x=1 */"), "");
    }

    #[test]
    fn replayable_statements() {
        assert!(replayable_statement(b"UPDATE t SET a = a + 1 WHERE id = 1"));
        assert!(replayable_statement(b"BEGIN"));
        assert!(!replayable_statement(b"SET @x = 1"));
        assert!(!replayable_statement(b"SELECT @x := @x + 1"));
        assert!(!replayable_statement(b"CREATE TEMPORARY TABLE t (a INT)"));
        assert!(!replayable_statement(b"USE other"));
    }

    #[test]
    fn recorder_stops_past_the_limit() {
        let mut r = Recorder::default();
        r.push(b"BEGIN", 1, 10);
        assert_eq!(r.entries().unwrap().len(), 1);
        r.push(b"UPDATE big", 2, 10);
        assert!(r.entries().is_none());
        r.push(b"x", 3, 10);
        assert!(r.entries().is_none(), "stays unreplayable until cleared");
        r.clear();
        r.push(b"x", 3, 10);
        assert!(r.entries().is_some());
    }
}
