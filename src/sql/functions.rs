//! Built-in functions that read nothing but their arguments and write
//! nothing. Any other name may be a stored function, which can write a
//! governed table: inside the protection window it makes a statement
//! unknown (validated first).

const BUILTIN: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
    "aes_decrypt",
    "aes_encrypt",
    "any_value",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "benchmark",
    "bin",
    "binary",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "cast",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "charset",
    "coalesce",
    "coercibility",
    "collation",
    "compress",
    "concat",
    "concat_ws",
    "connection_id",
    "conv",
    "convert",
    "convert_tz",
    "cos",
    "cot",
    "count",
    "crc32",
    "curdate",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "decode",
    "degrees",
    "elt",
    "encode",
    "exp",
    "export_set",
    "extract",
    "field",
    "find_in_set",
    "floor",
    "format",
    "found_rows",
    "from_base64",
    "from_days",
    "from_unixtime",
    "get_format",
    "get_lock",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "inet6_aton",
    "inet6_ntoa",
    "inet_aton",
    "inet_ntoa",
    "insert",
    "instr",
    "is_free_lock",
    "is_used_lock",
    "isnull",
    "json_array",
    "json_arrayagg",
    "json_contains",
    "json_contains_path",
    "json_depth",
    "json_extract",
    "json_keys",
    "json_length",
    "json_object",
    "json_objectagg",
    "json_quote",
    "json_search",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "last_day",
    "last_insert_id",
    "lastval",
    "lcase",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_set",
    "makedate",
    "maketime",
    "max",
    "md5",
    "microsecond",
    "mid",
    "min",
    "minute",
    "mod",
    "month",
    "monthname",
    "now",
    "nullif",
    "oct",
    "octet_length",
    "ord",
    "period_add",
    "period_diff",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote",
    "radians",
    "rand",
    "regexp_instr",
    "regexp_like",
    "regexp_replace",
    "regexp_substr",
    "release_all_locks",
    "release_lock",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "rpad",
    "rtrim",
    "schema",
    "sec_to_time",
    "second",
    "session_user",
    "sha",
    "sha1",
    "sha2",
    "sign",
    "sin",
    "sleep",
    "soundex",
    "space",
    "sqrt",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strcmp",
    "subdate",
    "substr",
    "substring",
    "substring_index",
    "subtime",
    "sum",
    "sysdate",
    "system_user",
    "tan",
    "time",
    "time_format",
    "time_to_sec",
    "timediff",
    "timestamp",
    "timestampadd",
    "timestampdiff",
    "to_base64",
    "to_days",
    "to_seconds",
    "trim",
    "truncate",
    "ucase",
    "uncompress",
    "unhex",
    "unix_timestamp",
    "upper",
    "user",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "uuid_short",
    "values",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "week",
    "weekday",
    "weekofyear",
    "year",
    "yearweek",
];

/// `name` (as written, unqualified) is a built-in function without side
/// effects on tables.
pub fn is_builtin(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    BUILTIN.binary_search(&n.as_str()).is_ok()
}

/// Built-ins the server parses as such only when `(` follows the name
/// at once (MySQL's "function name parsing" list); with a blank or a comment
/// before the `(` the name calls a stored function of the current database
/// when one exists (unless the session has IGNORE_SPACE).
const SPACE_SENSITIVE: &[&str] = &[
    "adddate",
    "bit_and",
    "bit_or",
    "bit_xor",
    "cast",
    "count",
    "curdate",
    "curtime",
    "date_add",
    "date_sub",
    "extract",
    "group_concat",
    "max",
    "mid",
    "min",
    "now",
    "position",
    "session_user",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "subdate",
    "substr",
    "substring",
    "sum",
    "sysdate",
    "system_user",
    "trim",
    "var_pop",
    "var_samp",
    "variance",
];

/// The statement may call a stored function: a function name that is not
/// a known built-in (or is qualified by a schema), or one of the
/// space-sensitive built-in names with a blank or comment before its `(`.
pub fn calls_maybe_stored(toks: &[crate::rules::lex::Tok], stmt: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::{Expr, visit_expressions};
    use sqlparser::tokenizer::Token;
    use std::ops::ControlFlow;
    let spaced = toks.iter().enumerate().any(|(i, t)| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && SPACE_SENSITIVE.binary_search(&w.value.to_ascii_lowercase().as_str()).is_ok())
            && toks.get(i + 1).is_some_and(|n| n.is_trivia())
            && toks[i + 1..].iter().find(|n| !n.is_trivia()).is_some_and(|n| n.token == Token::LParen)
    });
    if spaced {
        return true;
    }
    visit_expressions(stmt, |e| match e {
        Expr::Function(f) if !(f.name.0.len() == 1 && f.name.0[0].as_ident().is_some_and(|i| is_builtin(&i.value))) => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    #[test]
    fn space_sensitive_names_are_builtins_and_sorted() {
        assert!(super::SPACE_SENSITIVE.windows(2).all(|w| w[0] < w[1]), "keep SPACE_SENSITIVE sorted");
        assert!(super::SPACE_SENSITIVE.iter().all(|n| super::is_builtin(n)));
    }

    #[test]
    fn maybe_stored_calls() {
        use crate::rules::lex::{Modes, lex};
        let calls = |sql: &str| {
            let toks = lex(sql, Modes::default()).unwrap();
            let stmt = crate::rules::plan::parse_one(&toks).unwrap();
            super::calls_maybe_stored(&toks, &stmt)
        };
        assert!(!calls("SELECT NOW(), COUNT(*), abs (1) FROM t"));
        assert!(!calls("INSERT INTO t (a) VALUES (1)"));
        assert!(calls("SELECT now () FROM t"));
        assert!(calls("SELECT SUM/**/(a) FROM t"));
        assert!(calls("SELECT credit(1)"));
        assert!(calls("SELECT db.abs(1)"));
    }

    #[test]
    fn sorted_and_found() {
        assert!(super::BUILTIN.windows(2).all(|w| w[0] < w[1]), "keep BUILTIN sorted");
        assert!(super::is_builtin("NOW"));
        assert!(!super::is_builtin("credit_user"));
    }
}
