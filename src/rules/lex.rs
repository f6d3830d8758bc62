//! Tokenizing with byte offsets.
//!
//! sqlparser's tokenizer reports locations as (line, column) counted in
//! chars; splicing needs byte offsets into the original text, so every token
//! here carries its byte range. The session's NO_BACKSLASH_ESCAPES and
//! ANSI_QUOTES modes change where literals and identifiers end, so the
//! tokenizer runs with a dialect that follows them.
use sqlparser::dialect::{Dialect, MySqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};
use std::any::TypeId;

/// Server modes that change tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub backslash_escapes: bool,
    pub ansi_quotes: bool,
}

impl Default for Modes {
    fn default() -> Self {
        Modes { backslash_escapes: true, ansi_quotes: false }
    }
}

/// MySqlDialect for the tokenizer, with the two sql_mode switches.
///
/// Only the methods the tokenizer consults and MySqlDialect overrides are
/// delegated; `dialect()` reports MySqlDialect so the tokenizer's
/// `dialect_of!` checks behave as for MySQL. A test compares token streams
/// with the plain MySqlDialect to catch drift on sqlparser upgrades.
#[derive(Debug)]
struct ModeDialect {
    inner: MySqlDialect,
    modes: Modes,
}

impl Dialect for ModeDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<MySqlDialect>()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.inner.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.inner.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || (self.modes.ansi_quotes && ch == '"')
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.inner.identifier_quote_style(identifier)
    }
    fn supports_string_literal_backslash_escape(&self) -> bool {
        self.modes.backslash_escapes
    }
    fn supports_numeric_prefix(&self) -> bool {
        self.inner.supports_numeric_prefix()
    }
    fn supports_literal_prefix_in_qualified_name(&self) -> bool {
        self.inner.supports_literal_prefix_in_qualified_name()
    }
    fn supports_multiline_comment_hints(&self) -> bool {
        self.inner.supports_multiline_comment_hints()
    }
    fn requires_single_line_comment_whitespace(&self) -> bool {
        self.inner.requires_single_line_comment_whitespace()
    }
    fn supports_hash_comment(&self) -> bool {
        self.inner.supports_hash_comment()
    }
    fn ignores_wildcard_escapes(&self) -> bool {
        self.inner.ignores_wildcard_escapes()
    }
    fn supports_string_literal_concatenation(&self) -> bool {
        self.inner.supports_string_literal_concatenation()
    }
}

/// A token and its byte range in the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tok {
    pub token: Token,
    pub start: usize,
    pub end: usize,
    /// The sqlparser span, for handing tokens back to the parser.
    pub span: sqlparser::tokenizer::Span,
}

impl Tok {
    /// Whitespace and comments.
    pub fn is_trivia(&self) -> bool {
        matches!(self.token, Token::Whitespace(_))
    }

    pub fn is_blank(&self) -> bool {
        matches!(self.token, Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab))
    }

    /// An unquoted keyword.
    pub fn is_kw(&self, kw: Keyword) -> bool {
        matches!(&self.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == kw)
    }

    /// An unquoted word spelled `s` (for words sqlparser has no keyword for).
    pub fn is_word_ci(&self, s: &str) -> bool {
        matches!(&self.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s))
    }

    /// A literal value: numbers and every kind of string.
    pub fn is_literal(&self) -> bool {
        is_literal_token(&self.token)
    }
}

/// A literal value token: numbers and every kind of string.
pub fn is_literal_token(t: &Token) -> bool {
    {
        matches!(
            t,
            Token::Number(..)
                | Token::SingleQuotedString(_)
                | Token::DoubleQuotedString(_)
                | Token::TripleSingleQuotedString(_)
                | Token::TripleDoubleQuotedString(_)
                | Token::DollarQuotedString(_)
                | Token::SingleQuotedByteStringLiteral(_)
                | Token::DoubleQuotedByteStringLiteral(_)
                | Token::TripleSingleQuotedByteStringLiteral(_)
                | Token::TripleDoubleQuotedByteStringLiteral(_)
                | Token::SingleQuotedRawStringLiteral(_)
                | Token::DoubleQuotedRawStringLiteral(_)
                | Token::TripleSingleQuotedRawStringLiteral(_)
                | Token::TripleDoubleQuotedRawStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::QuoteDelimitedStringLiteral(_)
                | Token::NationalQuoteDelimitedStringLiteral(_)
                | Token::EscapedStringLiteral(_)
                | Token::UnicodeStringLiteral(_)
                | Token::HexStringLiteral(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// `/*! ... */` and `/*M! ... */` are code to the server; sqlparser
    /// expands the first with wrong locations and ignores the second.
    #[error("executable comment (/*! or /*M!) not supported")]
    ExecutableComment,
    #[error("token location {0} is outside the text")]
    BadLocation(Location),
}

/// Tokenize `sql` with byte ranges.
pub fn lex(sql: &str, modes: Modes) -> Result<Vec<Tok>, LexError> {
    if has_executable_comment(sql) {
        return Err(LexError::ExecutableComment);
    }
    let dialect = ModeDialect { inner: MySqlDialect {}, modes };
    let raw = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| LexError::Tokenizer(e.to_string()))?;
    let mut conv = OffsetConverter::new(sql);
    let mut out = Vec::with_capacity(raw.len());
    for TokenWithSpan { token, span } in raw {
        let start = conv.offset(span.start).ok_or(LexError::BadLocation(span.start))?;
        let end = conv.offset(span.end).ok_or(LexError::BadLocation(span.end))?;
        out.push(Tok { token, start, end, span });
    }
    Ok(out)
}

/// Tokens only (no offsets), for fingerprints: works on any text the
/// tokenizer accepts, executable comments included.
pub fn tokens(sql: &str, modes: Modes) -> Result<Vec<Token>, LexError> {
    let dialect = ModeDialect { inner: MySqlDialect {}, modes };
    Tokenizer::new(&dialect, sql).tokenize().map_err(|e| LexError::Tokenizer(e.to_string()))
}

fn has_executable_comment(sql: &str) -> bool {
    let b = sql.as_bytes();
    b.windows(3).enumerate().any(|(i, w)| w == b"/*!" || (w == b"/*M" && b.get(i + 3) == Some(&b'!')))
}

/// Converts tokenizer locations (1-based line, 1-based column in chars,
/// lines split on '\n' only) to byte offsets. Tokens come in order, so it
/// walks forward from the last answer and only restarts when asked for an
/// earlier location.
pub struct OffsetConverter<'a> {
    text: &'a str,
    line: u64,
    col: u64,
    byte: usize,
}

impl<'a> OffsetConverter<'a> {
    pub fn new(text: &'a str) -> Self {
        OffsetConverter { text, line: 1, col: 1, byte: 0 }
    }

    pub fn offset(&mut self, loc: Location) -> Option<usize> {
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        if (loc.line, loc.column) < (self.line, self.col) {
            *self = OffsetConverter::new(self.text);
        }
        let rest = &self.text[self.byte..];
        let mut chars = rest.char_indices();
        while (self.line, self.col) < (loc.line, loc.column) {
            let (i, c) = chars.next()?;
            let _ = i;
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
        if (self.line, self.col) == (loc.line, loc.column) { Some(self.byte) } else { None }
    }
}

/// Byte range covered by tokens `[a, b)` (of a slice), from the first to the
/// last significant token; None when there is none.
pub fn sig_range(toks: &[Tok]) -> Option<(usize, usize)> {
    let first = toks.iter().find(|t| !t.is_trivia())?;
    let last = toks.iter().rev().find(|t| !t.is_trivia())?;
    Some((first.start, last.end))
}

/// Paren depth before each token (depth of the token itself; a `(` is at
/// the outer depth, and so is its matching `)`).
pub fn depths(toks: &[Tok]) -> Vec<i32> {
    let mut d = 0i32;
    toks.iter()
        .map(|t| match t.token {
            Token::LParen => {
                d += 1;
                d - 1
            }
            Token::RParen => {
                d -= 1;
                d
            }
            _ => d,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str, modes: Modes) -> Vec<String> {
        lex(sql, modes).unwrap().iter().map(|t| sql[t.start..t.end].to_string()).collect()
    }

    #[test]
    fn byte_ranges_multibyte_and_multiline() {
        let sql = "SELECT 'héllo€', `ünï` \nFROM users\r\n WHERE x = '日本' -- ç\n FOR UPDATE";
        let toks = lex(sql, Modes::default()).unwrap();
        let joined: String = toks.iter().map(|t| &sql[t.start..t.end]).collect();
        assert_eq!(joined, sql, "tokens tile the text");
        let t = texts(sql, Modes::default());
        assert!(t.contains(&"'héllo€'".to_string()));
        assert!(t.contains(&"`ünï`".to_string()));
        assert!(t.contains(&"'日本'".to_string()));
        assert!(t.contains(&"UPDATE".to_string()));
    }

    #[test]
    fn backslash_modes() {
        let sql = r"SELECT 'a\'b' FROM t";
        let on = lex(sql, Modes::default()).unwrap();
        assert!(on.iter().any(|t| t.token == Token::SingleQuotedString("a'b".into())));
        // With NO_BACKSLASH_ESCAPES, 'a\' is a whole string and b' opens another.
        let sql2 = r"SELECT 'a\' , 'b' FROM t";
        let off = lex(sql2, Modes { backslash_escapes: false, ansi_quotes: false }).unwrap();
        assert!(off.iter().any(|t| t.token == Token::SingleQuotedString("a\\".into())));
        assert!(off.iter().any(|t| t.token == Token::SingleQuotedString("b".into())));
    }

    #[test]
    fn ansi_quotes_make_identifiers() {
        let sql = r#"SELECT "id" FROM t"#;
        let plain = lex(sql, Modes::default()).unwrap();
        assert!(plain.iter().any(|t| t.token == Token::DoubleQuotedString("id".into())));
        let ansi = lex(sql, Modes { backslash_escapes: true, ansi_quotes: true }).unwrap();
        assert!(ansi.iter().any(|t| matches!(&t.token, Token::Word(w) if w.value == "id" && w.quote_style == Some('"'))));
    }

    #[test]
    fn executable_comments_refused() {
        assert_eq!(lex("SELECT /*!50000 1 */", Modes::default()), Err(LexError::ExecutableComment));
        assert_eq!(lex("SELECT /*M!100000 1 */", Modes::default()), Err(LexError::ExecutableComment));
        assert!(lex("SELECT /*+ hint */ 1", Modes::default()).is_ok());
    }

    #[test]
    fn mode_dialect_matches_mysql_dialect() {
        // Drift guard: with default modes the wrapper must tokenize exactly
        // like MySqlDialect.
        let corpus = [
            "SELECT users.id, `b`, \"s\", 'x\\'y', 0x1F, 1e3, .5, -1 FROM users WHERE id = 8 # c\n FOR UPDATE",
            "UPDATE /*+ hint */ users SET a=a+1 -- trailing\n WHERE users.id = 8 LOCK IN SHARE MODE",
            "select _utf8mb4'x' collate utf8mb4_bin, X'0A', b'01', N'n', @a, @@sql_mode, ? ;",
        ];
        for sql in corpus {
            let ours: Vec<Token> = lex(sql, Modes::default()).unwrap().into_iter().map(|t| t.token).collect();
            let theirs = Tokenizer::new(&MySqlDialect {}, sql).tokenize().unwrap();
            assert_eq!(ours, theirs, "{sql}");
        }
    }
}
