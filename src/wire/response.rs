//! Where a command's response ends. A pure state machine: the session feeds
//! every server packet in and learns what the packet is and whether the
//! response is complete. Packet kinds are decided by position, never by a
//! first byte alone (binary rows start with 0x00, text rows may start with
//! 0xFE when they are 16 MiB or larger).
use super::conn::WireError;
use super::packets::{self, ERR, LOCAL_INFILE, OK, status};

/// Which response shape the command expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_PROCESS_INFO: OK / ERR / LOCAL INFILE / text result sets.
    Query,
    /// COM_STMT_EXECUTE: OK / ERR / binary result sets, or a cursor.
    Execute,
    /// COM_STMT_PREPARE: PREPARE_OK, parameter and column definitions.
    Prepare,
    /// COM_STMT_FETCH: rows then a terminator.
    Fetch,
    /// COM_FIELD_LIST: column definitions then a terminator.
    FieldList,
    /// One packet that may be OK, EOF or ERR (PING, INIT_DB, SET_OPTION, ...).
    OnePacket,
    /// COM_STATISTICS: one plain-text packet.
    Statistics,
}

/// What a packet was, by its position in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ok,
    Err,
    /// MariaDB progress report: not terminal.
    Progress,
    /// The server asks the client to upload a file; the client's packets up to
    /// an empty one go to the server next, then the response continues.
    LocalInfile,
    ColumnCount(u64),
    ColumnDef,
    ColumnsEof,
    Row,
    Terminator,
    PrepareOk {
        stmt_id: u32,
        columns: u16,
        params: u16,
    },
    ParamDef,
    DefsEof,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub part: Part,
    pub done: bool,
    /// Status flags carried by this packet (OK, EOF, 0xFE-OK).
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Params { left: u16, columns: u16 },
    ParamsEof { columns: u16 },
    PrepColumns(u16),
    PrepColumnsEof,
    FieldList,
    Done,
}

#[derive(Debug, Clone)]
pub struct Response {
    expect: Expect,
    state: State,
    deprecate_eof: bool,
}

impl Response {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let state = match expect {
            Expect::Fetch => State::Rows,
            Expect::FieldList => State::FieldList,
            _ => State::First,
        };
        Response { expect, state, deprecate_eof }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next packet is a row or the rows' terminator.
    pub fn in_rows(&self) -> bool {
        self.state == State::Rows
    }

    /// A packet of at least 64 KiB while [`in_rows`](Self::in_rows): a row
    /// (no terminator or ERR is that large), streamed rather than fed whole.
    pub fn large_row(&mut self) -> Step {
        debug_assert!(self.in_rows());
        Step { part: Part::Row, done: false, status: None }
    }

    pub fn feed(&mut self, p: &[u8]) -> Result<Step, WireError> {
        let first = *p.first().ok_or(WireError::Malformed("empty packet in response"))?;
        let step = |part, done, status| Step { part, done, status };
        let (part, next, st) = match self.state {
            State::Done => return Err(WireError::Malformed("packet after the end of a response")),
            State::First => match self.expect {
                Expect::Statistics => (Part::Text, State::Done, None),
                Expect::OnePacket => match first {
                    ERR => (Part::Err, State::Done, None),
                    _ => (Part::Ok, State::Done, packets::status_of(p, self.deprecate_eof)),
                },
                Expect::Prepare => match first {
                    ERR => (Part::Err, State::Done, None),
                    OK if p.len() >= 12 => {
                        let stmt_id = u32::from_le_bytes(p[1..5].try_into().unwrap());
                        let columns = u16::from_le_bytes([p[5], p[6]]);
                        let params = u16::from_le_bytes([p[7], p[8]]);
                        let next = self.after_params(params, columns);
                        (Part::PrepareOk { stmt_id, columns, params }, next, None)
                    }
                    _ => return Err(WireError::Malformed("bad PREPARE response")),
                },
                _ => match first {
                    OK => {
                        let s = packets::parse_ok(p, false).map(|o| o.status);
                        (Part::Ok, self.after_result(s), s)
                    }
                    ERR if packets::parse_err(p).map(|e| e.code) == Some(packets::PROGRESS_CODE) => (Part::Progress, State::First, None),
                    ERR => (Part::Err, State::Done, None),
                    LOCAL_INFILE => (Part::LocalInfile, State::First, None),
                    _ => {
                        let (n, _) = packets::lenenc_int(p).ok_or(WireError::Malformed("column count"))?;
                        if n == 0 {
                            return Err(WireError::Malformed("zero column count"));
                        }
                        (Part::ColumnCount(n), State::Columns(n), None)
                    }
                },
            },
            State::Columns(left) => {
                let next = if left > 1 {
                    State::Columns(left - 1)
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                (Part::ColumnDef, next, None)
            }
            State::ColumnsEof => {
                let s = packets::terminator_status(p, false);
                // An EXECUTE that opened a cursor sends no rows: FETCH gets them.
                let cursor = s.is_some_and(|s| s & status::CURSOR_EXISTS != 0);
                let next = if cursor && self.expect == Expect::Execute { self.after_result(s) } else { State::Rows };
                (Part::ColumnsEof, next, s)
            }
            State::Rows => {
                if first == ERR {
                    (Part::Err, State::Done, None)
                } else if packets::is_terminator(p) {
                    let s = packets::terminator_status(p, self.deprecate_eof);
                    let next = if self.expect == Expect::Fetch { State::Done } else { self.after_result(s) };
                    (Part::Terminator, next, s)
                } else {
                    (Part::Row, State::Rows, None)
                }
            }
            State::Params { left, columns } => {
                let next = if left > 1 {
                    State::Params { left: left - 1, columns }
                } else if self.deprecate_eof {
                    self.after_params(0, columns)
                } else {
                    State::ParamsEof { columns }
                };
                (Part::ParamDef, next, None)
            }
            State::ParamsEof { columns } => (Part::DefsEof, self.after_params(0, columns), None),
            State::PrepColumns(left) => {
                let next = if left > 1 {
                    State::PrepColumns(left - 1)
                } else if self.deprecate_eof {
                    State::Done
                } else {
                    State::PrepColumnsEof
                };
                (Part::ColumnDef, next, None)
            }
            State::PrepColumnsEof => (Part::DefsEof, State::Done, None),
            State::FieldList => match first {
                ERR => (Part::Err, State::Done, None),
                _ if packets::is_terminator(p) => (Part::Terminator, State::Done, packets::terminator_status(p, self.deprecate_eof)),
                _ => (Part::ColumnDef, State::FieldList, None),
            },
        };
        self.state = next;
        Ok(step(part, next == State::Done, st))
    }

    fn after_result(&self, status: Option<u16>) -> State {
        if status.is_some_and(|s| s & status::MORE_RESULTS != 0) { State::First } else { State::Done }
    }

    fn after_params(&self, params: u16, columns: u16) -> State {
        if params > 0 {
            State::Params { left: params, columns }
        } else if columns > 0 {
            State::PrepColumns(columns)
        } else {
            State::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOF_MORE: [u8; 5] = [0xFE, 0, 0, 0x0A, 0];
    const EOF_LAST: [u8; 5] = [0xFE, 0, 0, 0x02, 0];
    const EOF_CURSOR: [u8; 5] = [0xFE, 0, 0, 0x42, 0];

    fn run(r: &mut Response, packets: &[&[u8]]) -> Vec<Part> {
        let mut out = vec![];
        for (i, p) in packets.iter().enumerate() {
            let s = r.feed(p).unwrap();
            out.push(s.part);
            assert_eq!(s.done, i == packets.len() - 1, "done only on the last packet ({i})");
        }
        out
    }

    #[test]
    fn text_result_then_more_results_then_ok() {
        let mut r = Response::new(Expect::Query, false);
        let parts = run(&mut r, &[&[1], b"coldef", &EOF_LAST[..], b"\x01a", &EOF_MORE, &[0, 0, 0, 2, 0, 0, 0]]);
        assert_eq!(parts, vec![Part::ColumnCount(1), Part::ColumnDef, Part::ColumnsEof, Part::Row, Part::Terminator, Part::Ok]);
    }

    #[test]
    fn deprecate_eof_binary_rows_starting_with_zero() {
        let mut r = Response::new(Expect::Execute, true);
        let fe_ok = [0xFE, 0, 0, 0x02, 0, 0, 0];
        let parts = run(&mut r, &[&[2], b"c1", b"c2", &[0, 0, 1, 2], &[0, 0, 3, 4], &fe_ok]);
        assert_eq!(parts[3], Part::Row);
        assert_eq!(parts[5], Part::Terminator);
    }

    #[test]
    fn execute_with_cursor_ends_after_column_eof() {
        let mut r = Response::new(Expect::Execute, false);
        assert_eq!(run(&mut r, &[&[1], b"c", &EOF_CURSOR]), vec![Part::ColumnCount(1), Part::ColumnDef, Part::ColumnsEof]);
        let mut f = Response::new(Expect::Fetch, false);
        assert_eq!(run(&mut f, &[&[0, 0, 1], &[0xFE, 0, 0, 0x82, 0]]), vec![Part::Row, Part::Terminator]);
    }

    #[test]
    fn err_after_rows_ends_the_command() {
        let mut r = Response::new(Expect::Query, false);
        let err = packets::build_err(1317, "70100", "Query execution was interrupted");
        assert_eq!(run(&mut r, &[&[1], b"c", &EOF_LAST[..], b"\x01a", &err])[4], Part::Err);
    }

    #[test]
    fn big_row_starting_with_fe_is_a_row() {
        let mut r = Response::new(Expect::Query, true);
        let mut big = vec![0xFE; crate::wire::conn::MAX_FRAME + 5];
        big[0] = 0xFE;
        r.feed(&[1]).unwrap();
        r.feed(b"c").unwrap();
        assert_eq!(r.feed(&big).unwrap().part, Part::Row);
        assert!(r.feed(&[0xFE, 0, 0, 2, 0, 0, 0]).unwrap().done);
    }

    #[test]
    fn local_infile_and_progress_are_not_terminal() {
        let mut r = Response::new(Expect::Query, false);
        let mut progress = vec![0xFF, 0xFF, 0xFF, 1, 1, 0, 0, 0];
        progress.extend_from_slice(b"\x05stage");
        assert_eq!(r.feed(&progress).unwrap(), Step { part: Part::Progress, done: false, status: None });
        assert_eq!(r.feed(b"\xFBdata.csv").unwrap().part, Part::LocalInfile);
        assert!(r.feed(&[0, 3, 0, 2, 0, 0, 0]).unwrap().done);
    }

    #[test]
    fn prepare_with_and_without_eofs() {
        let ok = [0, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
        let mut r = Response::new(Expect::Prepare, false);
        let parts = run(&mut r, &[&ok, b"p", &EOF_LAST, b"c1", b"c2", &EOF_LAST]);
        assert_eq!(parts[0], Part::PrepareOk { stmt_id: 7, columns: 2, params: 1 });
        let mut r = Response::new(Expect::Prepare, true);
        assert_eq!(run(&mut r, &[&ok, b"p", b"c1", b"c2"]).len(), 4);
        let none = [0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Response::new(Expect::Prepare, false).feed(&none).unwrap().done);
    }

    #[test]
    fn field_list_and_one_packet() {
        let mut r = Response::new(Expect::FieldList, false);
        assert_eq!(run(&mut r, &[b"c1", b"c2", &EOF_LAST]).len(), 3);
        let mut r = Response::new(Expect::OnePacket, false);
        let s = r.feed(&EOF_LAST).unwrap();
        assert!(s.done);
        assert_eq!(s.status, Some(2));
        assert!(Response::new(Expect::Statistics, false).feed(b"Uptime: 5").unwrap().done);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::wire::packets::put_lenenc_str;
    use proptest::prelude::*;

    /// One result of a multi-result response: an OK, or a result set with
    /// `cols` columns and rows of random bytes (text or binary layout).
    #[derive(Debug, Clone)]
    enum Result_ {
        Ok,
        Set { cols: u8, rows: Vec<Vec<u8>>, binary: bool },
    }

    fn result() -> impl Strategy<Value = Result_> {
        prop_oneof![
            Just(Result_::Ok),
            (1u8..5, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20), any::<bool>())
                .prop_map(|(cols, rows, binary)| Result_::Set { cols, rows, binary }),
        ]
    }

    fn ok(status: u16, fe: bool) -> Vec<u8> {
        let mut p = vec![if fe { 0xFE } else { 0x00 }, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    /// The packets a server sends for these results, flagging MORE_RESULTS on all but the last.
    fn packets(results: &[Result_], deprecate_eof: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, r) in results.iter().enumerate() {
            let status = if i + 1 < results.len() { status::MORE_RESULTS | 2 } else { 2 };
            match r {
                Result_::Ok => out.push(ok(status, false)),
                Result_::Set { cols, rows, binary } => {
                    out.push(vec![*cols]);
                    for c in 0..*cols {
                        let mut def = Vec::new();
                        put_lenenc_str(&mut def, format!("c{c}").as_bytes());
                        out.push(def);
                    }
                    if !deprecate_eof {
                        out.push(eof(2));
                    }
                    for row in rows {
                        // Binary rows start with 0x00; text rows are lenenc strings.
                        let mut p = if *binary { vec![0x00] } else { Vec::new() };
                        put_lenenc_str(&mut p, row);
                        out.push(p);
                    }
                    out.push(if deprecate_eof { ok(status, true) } else { eof(status) });
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn response_ends_exactly_at_its_last_packet(results in prop::collection::vec(result(), 1..5), deprecate_eof in any::<bool>()) {
            let pk = packets(&results, deprecate_eof);
            let mut r = Response::new(Expect::Query, deprecate_eof);
            for (i, p) in pk.iter().enumerate() {
                let step = r.feed(p).unwrap();
                prop_assert_eq!(step.done, i + 1 == pk.len(), "packet {} of {}", i, pk.len());
            }
            let sets = results.iter().filter(|r| matches!(r, Result_::Set { .. })).count();
            let mut r = Response::new(Expect::Query, deprecate_eof);
            let counted = pk.iter().filter(|p| matches!(r.feed(p).unwrap().part, Part::ColumnCount(_))).count();
            prop_assert_eq!(counted, sets);
        }
    }
}
