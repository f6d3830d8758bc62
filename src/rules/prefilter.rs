//! The prefilter: most statements never reach the parser. A statement is a
//! candidate only when it mentions a governed table name and an `UPDATE`
//! keyword (which `FOR UPDATE` contains) or `SHARE` (`FOR SHARE`, `LOCK IN
//! SHARE MODE`). Case-insensitive, allocation-free; false positives are
//! fine (the parser decides), false negatives are not.

/// `needles` are lowercase ASCII table names.
pub fn is_candidate(needles: &[Vec<u8>], sql: &[u8]) -> bool {
    if needles.is_empty() {
        return false;
    }
    (contains_ci(sql, b"update") || contains_ci(sql, b"share") || contains_ci(sql, b"replace"))
        && needles.iter().any(|n| contains_ci(sql, n))
}

/// ASCII case-insensitive substring search; `needle` is lowercase.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    if hay.len() < needle.len() {
        return false;
    }
    let upper = first.to_ascii_uppercase();
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let b = hay[i];
        if (b == first || b == upper) && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(sql: &str) -> bool {
        is_candidate(&[b"users".to_vec(), b"conversations".to_vec()], sql.as_bytes())
    }

    #[test]
    fn candidates() {
        assert!(cand("SELECT * FROM users WHERE id = 8 FOR UPDATE"));
        assert!(cand("select * from `USERS` where id = 8 lock in share mode"));
        assert!(cand("SELECT * FROM Users WHERE id = 8 FOR SHARE"));
        assert!(cand("UPDATE users SET a = 1"));
        assert!(cand("update conversations set n = 2 where id = 1"));
        assert!(!cand("SELECT * FROM users WHERE id = 8"));
        assert!(!cand("UPDATE orders SET a = 1"));
        assert!(!cand("INSERT INTO compute_freeze_logs (user_id) VALUES (8)"));
        assert!(!cand(""));
        assert!(!is_candidate(&[], b"UPDATE users SET a = 1"));
    }

    #[test]
    fn substring_search() {
        assert!(contains_ci(b"abcUSERSx", b"users"));
        assert!(contains_ci(b"users", b"users"));
        assert!(!contains_ci(b"user", b"users"));
        assert!(!contains_ci(b"usersx"[..4].as_ref(), b"users"));
        assert!(contains_ci("é users".as_bytes(), b"users"));
    }
}
