//! The statement file `thaw explain --file` reads: plain SQL (statements
//! ended by `;`) or an excerpt of a MariaDB/MySQL general query log,
//! detected from its lines. Annotations are `--` comment lines of their own:
//!
//! - `-- rows: [{"id": 8, "balance": "5000.00"}]` gives the result rows of
//!   the statement before it (JSON objects, one per row; `[]` is no row).
//!   Several `-- rows:` lines add up. A number keeps its text as written.
//! - `-- connection 789` (plain SQL only; the log names its connections)
//!   makes the statements after it run on that connection.
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Statements,
    GeneralLog,
}

/// One value of a result row, typed as JSON wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// The number's text as written (`616`, `616.00`).
    Number(String),
    Text(String),
}

impl Value {
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Null => None,
            Value::Number(s) | Value::Text(s) => Some(s),
        }
    }
}

/// A result row: (column name as the result shows it, value), in order.
pub type Row = Vec<(String, Value)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Query(String),
    /// A prepared statement's execution (the log shows it with its values).
    Execute(String),
    /// A new connection; the log names its database.
    Connect {
        schema: Option<String>,
    },
    InitDb(String),
    Quit,
    /// A logged command thaw explains nothing for (Prepare, Ping, ...).
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line where it starts.
    pub line: usize,
    pub connection: Option<u64>,
    pub command: Command,
    pub rows: Option<Vec<Row>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("line {line}: `-- rows:` {message}")]
    Rows { line: usize, message: String },
    #[error("line {line}: `-- rows:` before any statement")]
    RowsFirst { line: usize },
    #[error("line {line}: `-- connection` number out of range")]
    Connection { line: usize },
    #[error("no statements")]
    Empty,
}

/// Read the file, detecting its format.
pub fn parse(text: &str) -> Result<(Format, Vec<Entry>), InputError> {
    let format = if text.lines().take(200).any(|l| log_entry(l).is_some()) { Format::GeneralLog } else { Format::Statements };
    let entries = match format {
        Format::Statements => statements(text)?,
        Format::GeneralLog => general_log(text)?,
    };
    if entries.is_empty() {
        return Err(InputError::Empty);
    }
    Ok((format, entries))
}

enum Directive {
    Rows(Vec<Row>),
    Connection(u64),
}

fn directive(line: &str, no: usize) -> Result<Option<Directive>, InputError> {
    let t = line.trim();
    if let Some(json) = t.strip_prefix("-- rows:") {
        return rows_json(json).map(|r| Some(Directive::Rows(r))).map_err(|message| InputError::Rows { line: no, message });
    }
    // `-- connection 789`; any other text after it is a plain comment.
    if let Some(id) = t.strip_prefix("-- connection ").map(str::trim)
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
    {
        return id.parse().map(|id| Some(Directive::Connection(id))).map_err(|_| InputError::Connection { line: no });
    }
    Ok(None)
}

fn attach(entries: &mut [Entry], rows: Vec<Row>, line: usize) -> Result<(), InputError> {
    let last = entries.last_mut().ok_or(InputError::RowsFirst { line })?;
    last.rows.get_or_insert_with(Vec::new).extend(rows);
    Ok(())
}

/// Plain SQL: statements end at a `;` outside quotes and comments.
fn statements(text: &str) -> Result<Vec<Entry>, InputError> {
    let mut entries = Vec::new();
    let mut connection = None;
    let mut cur = String::new();
    let mut start_line = 0;
    let mut pending_rows: Option<(Vec<Row>, usize)> = None;
    let mut scan = Scan::default();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let no = i + 1;
        if scan.at_rest() {
            if let Some(d) = directive(line, no)? {
                match d {
                    // Rows written before the `;` belong to the statement being read.
                    Directive::Rows(r) if !cur.trim().is_empty() => pending_rows.get_or_insert((Vec::new(), no)).0.extend(r),
                    Directive::Rows(r) => attach(&mut entries, r, no)?,
                    Directive::Connection(id) => connection = Some(id),
                }
                continue;
            }
            let t = line.trim_start();
            // Comment lines before a statement are not part of it.
            if cur.trim().is_empty() && (t.starts_with("--") || t.starts_with('#') || t.is_empty()) {
                continue;
            }
        }
        for c in line.chars() {
            if cur.trim().is_empty() && !c.is_whitespace() {
                start_line = no;
            }
            if scan.ends_statement(c) {
                push_statement(&mut entries, &mut cur, start_line, connection, pending_rows.take());
            } else {
                cur.push(c);
            }
        }
    }
    push_statement(&mut entries, &mut cur, start_line, connection, pending_rows.take());
    Ok(entries)
}

fn push_statement(entries: &mut Vec<Entry>, cur: &mut String, line: usize, connection: Option<u64>, rows: Option<(Vec<Row>, usize)>) {
    let sql = std::mem::take(cur).trim().to_string();
    if sql.is_empty() {
        return;
    }
    entries.push(Entry { line, connection, command: Command::Query(sql), rows: rows.map(|r| r.0) });
}

/// Where a character scan is: inside a quote or comment `;` ends nothing.
#[derive(Default)]
struct Scan {
    quote: Option<char>,
    escaped: bool,
    line_comment: bool,
    block_comment: bool,
    /// `--` was read: a comment when whitespace follows (MySQL's rule).
    dashes: bool,
    prev: char,
}

impl Scan {
    fn at_rest(&self) -> bool {
        self.quote.is_none() && !self.block_comment
    }

    /// Feed one character; true when it is a statement's ending `;`.
    fn ends_statement(&mut self, c: char) -> bool {
        let prev = std::mem::replace(&mut self.prev, c);
        if std::mem::take(&mut self.dashes) && c.is_whitespace() {
            self.line_comment = c != '\n';
            return false;
        }
        if self.line_comment {
            self.line_comment = c != '\n';
            return false;
        }
        if self.block_comment {
            if prev == '*' && c == '/' {
                self.block_comment = false;
                self.prev = ' ';
            }
            return false;
        }
        if let Some(q) = self.quote {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' && q != '`' {
                self.escaped = true;
            } else if c == q {
                self.quote = None;
            }
            return false;
        }
        match c {
            '\'' | '"' | '`' => self.quote = Some(c),
            '#' => self.line_comment = true,
            '-' if prev == '-' => {
                self.dashes = true;
                self.prev = ' ';
            }
            '*' if prev == '/' => self.block_comment = true,
            ';' => return true,
            _ => {}
        }
        false
    }
}

/// `(connection id, command, argument)` of a general-log line that starts
/// an entry: `241001 10:00:01\t    12 Query\tSELECT 1` (MariaDB), the same
/// without the time after tabs, or `2024-10-01T10:00:01.000000Z\t   12 Query\t...` (MySQL).
fn log_entry(line: &str) -> Option<(u64, &str, &str)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = if line.starts_with('\t') {
        line.trim_start_matches('\t')
    } else {
        let (time, rest) = line.split_once('\t')?;
        if !time.starts_with(|c: char| c.is_ascii_digit()) || !time.chars().all(|c| c.is_ascii_digit() || " -:.TZ+".contains(c)) {
            return None;
        }
        rest
    };
    let rest = rest.trim_start_matches(' ');
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let id = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(' ')?;
    let (command, arg) = rest.split_once('\t').unwrap_or((rest, ""));
    KNOWN_COMMANDS.contains(&command).then_some((id, command, arg))
}

const KNOWN_COMMANDS: [&str; 21] = [
    "Query",
    "Execute",
    "Prepare",
    "Connect",
    "Quit",
    "Init DB",
    "Close stmt",
    "Reset stmt",
    "Long Data",
    "Fetch",
    "Field List",
    "Statistics",
    "Ping",
    "Change user",
    "Reset connection",
    "Set option",
    "Refresh",
    "Processlist",
    "Kill",
    "Debug",
    "Shutdown",
];

/// The log is MySQL's (its banner names mysqld, or its times are ISO 8601),
/// not MariaDB's.
pub fn mysql_server(text: &str) -> bool {
    text.lines().take(200).any(|l| {
        l.contains(", Version: ") && l.contains("started with:") && !l.contains("MariaDB")
            || l.len() > 11 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T' && log_entry(l).is_some()
    })
}

/// Server banner lines a log repeats at each start.
fn log_header(line: &str) -> bool {
    line.starts_with("Time") && line.contains("Id Command")
        || line.starts_with("Tcp port:")
        || line.contains(", Version: ") && line.contains("started with:")
}

fn general_log(text: &str) -> Result<Vec<Entry>, InputError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let no = i + 1;
        if let Some(d) = directive(line, no)? {
            match d {
                Directive::Rows(r) => attach(&mut entries, r, no)?,
                Directive::Connection(_) => {}
            }
            continue;
        }
        if let Some((id, command, arg)) = log_entry(line) {
            let arg = arg.to_string();
            let command = match command {
                "Query" => Command::Query(arg),
                "Execute" => Command::Execute(arg),
                "Connect" => Command::Connect { schema: connect_schema(&arg) },
                "Init DB" => Command::InitDb(arg.trim().to_string()),
                "Quit" => Command::Quit,
                other => Command::Other(other.to_string()),
            };
            entries.push(Entry { line: no, connection: Some(id), command, rows: None });
            continue;
        }
        if log_header(line) {
            continue;
        }
        // A statement's further lines.
        if let Some(Entry { command: Command::Query(s) | Command::Execute(s), .. }) = entries.last_mut() {
            s.push('\n');
            s.push_str(line.trim_end_matches(['\r', '\n']));
        }
    }
    for e in &mut entries {
        if let Command::Query(s) | Command::Execute(s) = &mut e.command {
            let t = s.trim_end().trim_end_matches(';').trim_end();
            *s = t.to_string();
        }
    }
    Ok(entries)
}

/// `root@localhost on billing using TCP/IP` -> `billing`.
fn connect_schema(arg: &str) -> Option<String> {
    let after = arg.split_once(" on ")?.1;
    let db = after.split(" using ").next().unwrap_or(after).trim();
    (!db.is_empty()).then(|| db.to_string())
}

fn rows_json(json: &str) -> Result<Vec<Row>, String> {
    let rows: Vec<JsonRow> = serde_json::from_str(json.trim()).map_err(|e| format!("expects a JSON array of objects: {e}"))?;
    rows.into_iter().map(|r| r.0.into_iter().map(|(k, v)| Ok((k, value(&v)?))).collect()).collect()
}

fn value(raw: &RawValue) -> Result<Value, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str(text).map(Value::Text).map_err(|e| e.to_string()),
        Some(b'-' | b'0'..=b'9') => Ok(Value::Number(text.to_string())),
        _ if text == "null" => Ok(Value::Null),
        _ if text == "true" => Ok(Value::Number("1".into())),
        _ if text == "false" => Ok(Value::Number("0".into())),
        _ => Err(format!("a value must be a string, a number, a boolean or null, got {text}")),
    }
}

/// A JSON object with its keys in the order written and values unparsed.
struct JsonRow(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for JsonRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonRow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of column: value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<JsonRow, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    out.push(kv);
                }
                Ok(JsonRow(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queries(entries: &[Entry]) -> Vec<&str> {
        entries
            .iter()
            .filter_map(|e| match &e.command {
                Command::Query(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_statements_split_outside_quotes_and_comments() {
        let text =
            "-- a transaction\nBEGIN;\nSELECT 'a;b', \"c;\", `d;` -- e;\nFROM t /* f; */ WHERE x = 'it''s;' AND y = 1--1;\n# g\nCOMMIT";
        let (format, entries) = parse(text).unwrap();
        assert_eq!(format, Format::Statements);
        assert_eq!(
            queries(&entries),
            ["BEGIN", "SELECT 'a;b', \"c;\", `d;` -- e;\nFROM t /* f; */ WHERE x = 'it''s;' AND y = 1--1", "COMMIT"]
        );
        assert_eq!(entries.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 6]);
    }

    #[test]
    fn rows_and_connections() {
        let text = "-- connection 7\nSELECT id, balance FROM users WHERE id = 8 FOR UPDATE;\n-- rows: [{\"id\": 8, \"balance\": 616.00, \"name\": \"bob\", \"x\": null}]\n-- rows: [{\"id\": 9, \"balance\": -1, \"name\": \"a\\\"b\", \"x\": true}]\nSELECT 1\n-- rows: []\n;";
        let (_, entries) = parse(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].connection, Some(7));
        let rows = entries[0].rows.as_ref().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            vec![
                ("id".to_string(), Value::Number("8".into())),
                ("balance".to_string(), Value::Number("616.00".into())),
                ("name".to_string(), Value::Text("bob".into())),
                ("x".to_string(), Value::Null),
            ]
        );
        assert_eq!(rows[1][2].1, Value::Text("a\"b".into()));
        assert_eq!(rows[1][3].1, Value::Number("1".into()));
        assert_eq!(entries[1].rows, Some(vec![]), "rows before the ; belong to the statement being read");
        assert!(matches!(parse("-- rows: [1]\nSELECT 1"), Err(InputError::Rows { line: 1, .. })));
        assert_eq!(parse("-- rows: []\nSELECT 1"), Err(InputError::RowsFirst { line: 1 }));
        assert_eq!(parse("-- only a comment\n"), Err(InputError::Empty));
        let (_, e) = parse("-- connection 7 checks the balance\nSELECT 1").unwrap();
        assert_eq!(e[0].connection, None, "a comment, not a directive");
        assert_eq!(parse("-- connection 99999999999999999999999\nSELECT 1"), Err(InputError::Connection { line: 1 }));
    }

    #[test]
    fn mariadb_and_mysql_general_logs() {
        let text = "/usr/sbin/mariadbd, Version: 10.11.6-MariaDB-log (Debian). started with:\nTcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\nTime\t\t    Id Command\tArgument\n241001 10:00:01\t    12 Connect\troot@localhost on billing using TCP/IP\n\t\t    12 Query\tSELECT users.id\nFROM users\nWHERE users.id = 8 FOR UPDATE\n-- rows: [{\"id\": 8}]\n\t\t    13 Init DB\tother\n2024-10-01T10:00:01.000000Z\t   13 Query\tCOMMIT\n\t\t    12 Quit\t\n";
        let (format, entries) = parse(text).unwrap();
        assert_eq!(format, Format::GeneralLog);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].command, Command::Connect { schema: Some("billing".into()) });
        assert_eq!(entries[1].command, Command::Query("SELECT users.id\nFROM users\nWHERE users.id = 8 FOR UPDATE".into()));
        assert_eq!((entries[1].line, entries[1].connection), (5, Some(12)));
        assert_eq!(entries[1].rows.as_ref().map(Vec::len), Some(1));
        assert_eq!(entries[2].command, Command::InitDb("other".into()));
        assert_eq!((entries[3].connection, &entries[3].command), (Some(13), &Command::Query("COMMIT".into())));
        assert_eq!(entries[4].command, Command::Quit);
        assert_eq!(connect_schema("root@localhost on  using Socket"), None);
        assert!(mysql_server(text), "an ISO time: MySQL");
        assert!(!mysql_server("\t\t  5 Query\tSELECT 1\n"));
        assert!(mysql_server("/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:\n"));
    }
}
