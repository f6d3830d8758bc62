//! Fingerprints: the statement with literals replaced by `?` and
//! whitespace and comments collapsed to one space, built from tokens so a
//! literal can never leak into a log.
use super::lex::{Modes, is_literal_token, tokens};
use sqlparser::tokenizer::Token;

/// Fingerprint of `sql` tokenized with MySQL's default sql_mode.
pub fn fingerprint(sql: &str) -> String {
    fingerprint_modes(sql, Modes::default())
}

/// Text that does not tokenize is not shown at all.
pub(crate) fn fingerprint_modes(sql: &str, modes: Modes) -> String {
    match tokens(sql, modes) {
        Ok(t) => from_tokens(&t),
        Err(_) => "<not tokenizable>".into(),
    }
}

pub(crate) fn from_tokens(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for t in tokens {
        match t {
            Token::Whitespace(_) => pending_space = true,
            t => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                if is_literal_token(t) {
                    out.push('?');
                } else {
                    out.push_str(&t.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_redacted_whitespace_collapsed() {
        assert_eq!(
            fingerprint("UPDATE users SET frozen_balance=1232, note = 'secret'  -- c 99\n WHERE users.id = 8"),
            "UPDATE users SET frozen_balance=?, note = ? WHERE users.id = ?"
        );
        assert_eq!(
            fingerprint("SELECT users.id \nFROM users \nWHERE users.id = 8 FOR UPDATE SKIP LOCKED;"),
            "SELECT users.id FROM users WHERE users.id = ? FOR UPDATE SKIP LOCKED;"
        );
        assert_eq!(fingerprint("select x'0A', 0x1F, \"dq\", 1e3 /* 42 */ from `t`"), "select ?, ?, ?, ? from `t`");
        assert_eq!(fingerprint("SELECT 'unterminated"), "<not tokenizable>");
    }
}
