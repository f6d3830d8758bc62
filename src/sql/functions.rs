//! Built-in functions that read nothing but their arguments and write
//! nothing. Any other name may be a stored function, which can write a
//! governed table: inside the protection window it makes a statement
//! unknown (validated first).

const BUILTIN: &[&str] = &[
    "abs", "acos", "adddate", "addtime", "aes_decrypt", "aes_encrypt", "any_value", "ascii", "asin", "atan", "atan2", "avg",
    "benchmark", "bin", "binary", "bit_and", "bit_count", "bit_length", "bit_or", "bit_xor", "cast", "ceil", "ceiling", "char",
    "char_length", "character_length", "charset", "coalesce", "coercibility", "collation", "compress", "concat", "concat_ws",
    "connection_id", "conv", "convert", "convert_tz", "cos", "cot", "count", "crc32", "curdate", "current_date", "current_time",
    "current_timestamp", "current_user", "curtime", "database", "date", "date_add", "date_format", "date_sub", "datediff", "day",
    "dayname", "dayofmonth", "dayofweek", "dayofyear", "decode", "degrees", "elt", "encode", "exp", "export_set", "extract",
    "field", "find_in_set", "floor", "format", "found_rows", "from_base64", "from_days", "from_unixtime", "get_format", "get_lock",
    "greatest", "group_concat", "hex", "hour", "if", "ifnull", "inet6_aton", "inet6_ntoa", "inet_aton", "inet_ntoa", "insert",
    "instr", "is_free_lock", "is_used_lock", "isnull", "json_array", "json_arrayagg", "json_contains", "json_contains_path",
    "json_depth", "json_extract", "json_keys", "json_length", "json_object", "json_objectagg", "json_quote", "json_search",
    "json_type", "json_unquote", "json_valid", "json_value", "last_day", "last_insert_id", "lastval", "lcase", "least", "left",
    "length", "ln", "localtime", "localtimestamp", "locate", "log", "log10", "log2", "lower", "lpad", "ltrim", "make_set",
    "makedate", "maketime", "max", "md5", "microsecond", "mid", "min", "minute", "mod", "month", "monthname", "now", "nullif",
    "oct", "octet_length", "ord", "period_add", "period_diff", "pi", "position", "pow", "power", "quarter", "quote", "radians",
    "rand", "regexp_instr", "regexp_like", "regexp_replace", "regexp_substr", "release_all_locks", "release_lock", "repeat",
    "replace", "reverse", "right", "round", "row_count", "rpad", "rtrim", "schema", "sec_to_time", "second", "session_user",
    "sha", "sha1", "sha2", "sign", "sin", "sleep", "soundex", "space", "sqrt", "std", "stddev", "stddev_pop", "stddev_samp",
    "str_to_date", "strcmp", "subdate", "substr", "substring", "substring_index", "subtime", "sum", "sysdate", "system_user",
    "tan", "time", "time_format", "time_to_sec", "timediff", "timestamp", "timestampadd", "timestampdiff", "to_base64", "to_days",
    "to_seconds", "trim", "truncate", "ucase", "uncompress", "unhex", "unix_timestamp", "upper", "user", "utc_date", "utc_time",
    "utc_timestamp", "uuid", "uuid_short", "values", "var_pop", "var_samp", "variance", "version", "week", "weekday",
    "weekofyear", "year", "yearweek",
];

/// `name` (as written, unqualified) is a built-in function without side
/// effects on tables.
pub fn is_builtin(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    BUILTIN.binary_search(&n.as_str()).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sorted_and_found() {
        assert!(super::BUILTIN.windows(2).all(|w| w[0] < w[1]), "keep BUILTIN sorted");
        assert!(super::is_builtin("NOW"));
        assert!(!super::is_builtin("credit_user"));
    }
}
