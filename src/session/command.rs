//! Command phase: read one client command, relay it, relay its response to
//! the end, repeat. The client is not read while a response is in flight
//! (pipelined commands wait in the buffer), except for a LOCAL INFILE upload.
use super::capture::ResultCapture;
use super::handshake::{self, ClientIo, ServerIo};
use super::state::ConnState;
use super::txn::{StatementEnd, Txn};
use super::{SessionError, Shared};
use crate::ops::metrics::labels;
use crate::ops::reload::Generation;
use crate::retry::ResponseDigest;
use crate::wire::packets::{self, OkInfo};
use crate::wire::response::{Expect, Part, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

pub mod cmd {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0A;
    pub const PROCESS_KILL: u8 = 0x0C;
    pub const DEBUG: u8 = 0x0D;
    pub const PING: u8 = 0x0E;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const RESET_CONNECTION: u8 = 0x1F;
}

/// What the session remembers of a prepared statement.
#[derive(Debug, Default, Clone)]
pub(super) struct Stmt {
    /// CALL: may run several statements and return several results.
    pub call: bool,
    /// SEND_LONG_DATA was used: the server consumed the data on execute.
    pub long_data: bool,
    /// Not plain DML (SET, CALL, ...): may change sql_mode, the character
    /// set or the current database.
    pub changes_settings: bool,
}

/// How to relay one response.
#[derive(Default)]
pub(super) struct RelayOpts<'a, 'r> {
    pub allow_infile: bool,
    /// Capture sink: governed rows shown update the captures.
    pub rows: Option<&'a mut ResultCapture<'r>>,
    /// Keep the response from the client until its first row: a read thaw
    /// unlocked that finds nothing is re-run with its lock instead.
    pub hold_until_row: bool,
}

/// What a relayed response was, as far as the session cares.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub digest: u64,
    pub err: Option<u16>,
    pub ok: Option<OkInfo>,
    pub stmt_id: Option<u32>,
    pub result_sets: u32,
    /// A status during the response had IN_TRANS clear.
    pub saw_idle: bool,
    /// `hold_until_row` and the result had no row: nothing reached the client.
    pub held_empty: bool,
}

pub(super) struct Session {
    pub client: ClientIo,
    pub server: ServerIo,
    pub state: ConnState,
    pub shared: Arc<Shared>,
    gen_rx: watch::Receiver<Arc<Generation>>,
    /// Config and rules in force; swapped only between transactions.
    pub live: Arc<Generation>,
    pub txn: Txn,
    pub stmts: HashMap<u32, Stmt>,
    /// Backend's innodb_rollback_on_timeout, read after connect.
    pub rollback_on_timeout: Option<bool>,
    drain: watch::Receiver<bool>,
}

impl Session {
    pub fn new(client: ClientIo, server: ServerIo, state: ConnState, shared: Arc<Shared>) -> Self {
        let mut gen_rx = shared.generation.clone();
        let live = gen_rx.borrow_and_update().clone();
        let drain = shared.drain.clone();
        Session {
            client,
            server,
            state,
            shared,
            gen_rx,
            live,
            txn: Txn::new(false),
            stmts: HashMap::new(),
            rollback_on_timeout: None,
            drain,
        }
    }

    pub async fn run(mut self) -> Result<(), SessionError> {
        self.read_backend_settings().await?;
        loop {
            if !self.state.in_transaction() && self.gen_rx.has_changed().unwrap_or(false) {
                self.live = self.gen_rx.borrow_and_update().clone();
            }
            let draining = *self.drain.borrow();
            if draining && !self.state.in_transaction() {
                tracing::debug!("draining: closing idle connection");
                return Ok(());
            }
            let Session { client, server, drain, .. } = &mut self;
            let packet = tokio::select! {
                p = client.read() => match p? {
                    Some(p) if !p.is_empty() => p,
                    Some(_) => return Err(SessionError::Protocol("empty command packet")),
                    None => return Err(SessionError::ClientClosed),
                },
                p = server.read() => return self.unsolicited(p).await,
                _ = drain.changed(), if !draining => continue,
            };
            let started = Instant::now();
            let command = packet[0];
            self.shared.metrics.command(command).inc();
            let keep_going = self.dispatch(packet).await?;
            self.shared.metrics.statement_seconds.observe(started.elapsed().as_secs_f64());
            if !keep_going {
                return Ok(());
            }
        }
    }

    /// A packet from the server while no command runs: a shutdown or
    /// wait_timeout notice. Forward it and close both sides.
    async fn unsolicited(&mut self, p: Result<Option<Bytes>, crate::wire::WireError>) -> Result<(), SessionError> {
        let p = self.server_read_result(p)?;
        if let Some(e) = packets::parse_err(&p) {
            tracing::info!(code = e.code, message = %String::from_utf8_lossy(&e.message), "backend sent an error while idle; closing");
        }
        self.client.set_seq(0);
        self.client.send(&p).await?;
        self.client.flush().await?;
        Err(SessionError::BackendClosed)
    }

    /// Relay one command. `Ok(false)` when the connection should end.
    async fn dispatch(&mut self, packet: Bytes) -> Result<bool, SessionError> {
        let command = packet[0];
        self.server.reset_seq();
        let in_tx_before = self.state.in_transaction();
        // Rows fetched from a cursor are not recorded: a replay could not compare them.
        if in_tx_before
            && !matches!(
                command,
                cmd::QUERY | cmd::STMT_EXECUTE | cmd::STMT_PREPARE | cmd::STMT_CLOSE | cmd::STMT_RESET | cmd::PING | cmd::STATISTICS
            )
        {
            self.txn.recorder.mark("a command other than a statement ran inside the transaction");
        }
        match command {
            cmd::QUIT => {
                self.server.send(&packet).await?;
                self.server.flush().await?;
                return Ok(false);
            }
            cmd::QUERY => self.query(packet, in_tx_before).await?,
            cmd::STMT_EXECUTE => self.execute(packet, in_tx_before).await?,
            cmd::STMT_PREPARE => {
                let keyword = crate::retry::record::first_keyword(&packet[1..]);
                let call = keyword == "CALL";
                let changes_settings = !super::query::keeps_settings(&keyword);
                let out = self.forward(&packet, Expect::Prepare).await?;
                if let Some(id) = out.stmt_id {
                    self.stmts.insert(id, Stmt { call, long_data: false, changes_settings });
                }
            }
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => {
                if let Some(id) = stmt_id(&packet) {
                    if command == cmd::STMT_CLOSE {
                        self.stmts.remove(&id);
                    } else {
                        self.stmts.entry(id).or_default().long_data = true;
                    }
                }
                // No response: waiting for one would deadlock.
                self.server.send(&packet).await?;
                self.server.flush().await?;
            }
            cmd::STMT_RESET => {
                if let Some(s) = stmt_id(&packet).and_then(|id| self.stmts.get_mut(&id)) {
                    s.long_data = false;
                }
                self.forward(&packet, Expect::OnePacket).await?;
            }
            cmd::STMT_FETCH => {
                self.forward(&packet, Expect::Fetch).await?;
            }
            cmd::FIELD_LIST => {
                self.forward(&packet, Expect::FieldList).await?;
            }
            cmd::STATISTICS => {
                self.forward(&packet, Expect::Statistics).await?;
            }
            cmd::PROCESS_INFO => {
                self.forward(&packet, Expect::Query).await?;
            }
            cmd::SET_OPTION => {
                let out = self.forward(&packet, Expect::OnePacket).await?;
                if out.err.is_none() && packet.len() >= 3 {
                    self.state.multi_statements = u16::from_le_bytes([packet[1], packet[2]]) == 0;
                }
            }
            cmd::INIT_DB => {
                let out = self.forward(&packet, Expect::OnePacket).await?;
                if out.err.is_none() {
                    self.state.schema = Some(String::from_utf8_lossy(&packet[1..]).into_owned());
                    self.state.settings_fresh = false;
                }
            }
            cmd::RESET_CONNECTION => {
                let out = self.forward(&packet, Expect::OnePacket).await?;
                if out.err.is_none() {
                    self.reset_session_state();
                }
            }
            cmd::CHANGE_USER => {
                self.server.send(&packet).await?;
                self.server.flush().await?;
                let ok = handshake::auth_exchange(&mut self.client, &mut self.server, self.state.tls_backend).await?;
                self.reset_session_state();
                // A refused COM_CHANGE_USER leaves MariaDB's session as the previous user.
                if let Some(status) = ok {
                    self.state.status = status;
                    self.state.user = change_user_name(&packet);
                }
            }
            cmd::PING | cmd::PROCESS_KILL | cmd::REFRESH | cmd::DEBUG | cmd::SHUTDOWN | cmd::SLEEP => {
                self.forward(&packet, Expect::OnePacket).await?;
            }
            _ => {
                // Replication streams, bulk execute (masked), and unknown commands.
                handshake::refuse(&mut self.client, 1047, "08S01", &format!("thaw: command 0x{command:02x} is not supported through thaw"))
                    .await?;
            }
        }
        Ok(true)
    }

    /// Send a command unchanged and relay its whole response.
    pub async fn forward(&mut self, packet: &[u8], expect: Expect) -> Result<Outcome, SessionError> {
        self.server.send(packet).await?;
        self.server.flush().await?;
        let first = self.read_server().await?;
        self.relay(first, expect, RelayOpts::default()).await
    }

    pub async fn read_server(&mut self) -> Result<Bytes, SessionError> {
        let p = self.server.read().await;
        self.server_read_result(p)
    }

    /// A backend that reset the connection is shown to the client as a
    /// reset too (drivers report "gone away" vs "lost connection" by it).
    fn server_read_result(&mut self, p: Result<Option<Bytes>, crate::wire::WireError>) -> Result<Bytes, SessionError> {
        match p {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(SessionError::BackendClosed),
            Err(crate::wire::WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                let _ = self.client.stream_mut().set_zero_linger();
                Err(SessionError::BackendClosed)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Relay a response to the client, starting with its already-read first
    /// packet: the one response reader, with the capture and hold sinks.
    pub async fn relay(&mut self, first: Bytes, expect: Expect, mut opts: RelayOpts<'_, '_>) -> Result<Outcome, SessionError> {
        let mut resp = Response::new(expect, self.state.deprecate_eof());
        let mut digest = ResponseDigest::default();
        let mut out = Outcome::default();
        let mut held: Option<Vec<Bytes>> = opts.hold_until_row.then(Vec::new);
        let mut packet = first;
        loop {
            let step = resp.feed(&packet)?;
            if let Some(s) = step.status {
                self.state.status = s;
                out.saw_idle |= s & packets::status::IN_TRANS == 0;
            }
            match step.part {
                Part::Err => {
                    let code = packets::parse_err(&packet).map_or(0, |e| e.code);
                    out.err = Some(code);
                    self.shared.metrics.backend_errors.get_or_create(&labels([("code", code.to_string())])).inc();
                }
                Part::Ok => out.ok = packets::parse_ok(&packet, self.state.session_track()),
                Part::ColumnCount(_) => {
                    out.result_sets += 1;
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.result_set();
                    }
                }
                Part::ColumnDef => {
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.column(&packet);
                    }
                }
                Part::Row => {
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.row(&packet);
                    }
                }
                Part::PrepareOk { stmt_id, .. } => out.stmt_id = Some(stmt_id),
                Part::LocalInfile if !opts.allow_infile => {
                    // Only a LOAD DATA LOCAL the client sent may read client files:
                    // answer for the client with "no file" and keep reading.
                    tracing::warn!("backend asked for a local file the client did not request; refused");
                    self.server.send(&[]).await?;
                    self.server.flush().await?;
                    packet = self.read_server().await?;
                    continue;
                }
                _ => {}
            }
            digest.add(&packet);
            if held.is_some() {
                if matches!(step.part, Part::Row | Part::Err | Part::LocalInfile) || out.result_sets > 1 {
                    for p in held.take().unwrap_or_default() {
                        self.client.send(&p).await?;
                    }
                    self.client.send(&packet).await?;
                } else if step.done {
                    out.held_empty = true;
                    out.digest = digest.finish();
                    return Ok(out);
                } else if let Some(h) = held.as_mut() {
                    h.push(packet.clone());
                }
            } else {
                self.client.send(&packet).await?;
            }
            if step.part == Part::LocalInfile {
                self.client.flush().await?;
                self.relay_upload().await?;
            }
            if step.done {
                break;
            }
            // Batch writes: flush only when the next packet needs a read from the socket.
            if held.is_none() && !self.server.has_buffered_packet() {
                self.client.flush().await?;
            }
            packet = self.read_server().await?;
        }
        self.client.flush().await?;
        out.digest = digest.finish();
        Ok(out)
    }

    /// LOAD DATA LOCAL: the client's file packets go to the server up to and
    /// including the empty packet that ends them.
    async fn relay_upload(&mut self) -> Result<(), SessionError> {
        loop {
            let p = self.client.read().await?.ok_or(SessionError::ClientClosed)?;
            self.server.send(&p).await?;
            if p.is_empty() {
                self.server.flush().await?;
                return Ok(());
            }
        }
    }

    /// Run a statement of thaw's own on the backend; nothing reaches the client.
    pub async fn side_query(&mut self, sql: &str) -> Result<SideResult, SessionError> {
        self.server.reset_seq();
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(cmd::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.server.send(&payload).await?;
        self.server.flush().await?;
        let mut resp = Response::new(Expect::Query, self.state.deprecate_eof());
        let mut columns = 0usize;
        let mut out = SideResult::default();
        loop {
            let p = self.read_server().await?;
            let step = resp.feed(&p)?;
            if let Some(s) = step.status {
                self.state.status = s;
            }
            match step.part {
                Part::ColumnDef => columns += 1,
                Part::Row => out.rows.push(text_row(&p, columns)),
                Part::Ok => out.ok = packets::parse_ok(&p, self.state.session_track()),
                Part::Err => out.err = packets::parse_err(&p),
                Part::LocalInfile => {
                    self.server.send(&[]).await?;
                    self.server.flush().await?;
                }
                _ => {}
            }
            if step.done {
                break;
            }
        }
        Ok(out)
    }

    /// After connect: read the settings retries and rewrites depend on. The
    /// connection is in autocommit mode here, so no transaction is opened.
    async fn read_backend_settings(&mut self) -> Result<(), SessionError> {
        let r = self.side_query("SELECT @@GLOBAL.innodb_rollback_on_timeout, @@GLOBAL.lower_case_table_names").await?;
        if let Some(row) = r.rows.first() {
            self.rollback_on_timeout = row.first().and_then(|v| v.as_deref()).map(|v| v == b"1" || v.eq_ignore_ascii_case(b"ON"));
            let fold = row.get(1).and_then(|v| v.as_deref()).is_some_and(|v| v != b"0");
            self.txn = Txn::new(fold);
        }
        self.refresh_settings().await?;
        // A SELECT leaves ROW_COUNT() at -1; a fresh session reports 0, as after a SET.
        self.side_query("SET @@SESSION.sql_mode = @@SESSION.sql_mode").await?;
        Ok(())
    }

    /// Read what the server says sql_mode, the client character set and the
    /// current database are. Run just before a statement the rules plan, so
    /// what it disturbs (warnings, ROW_COUNT()) that statement replaces.
    pub async fn refresh_settings(&mut self) -> Result<(), SessionError> {
        let r = self.side_query("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, DATABASE()").await?;
        let text = |v: Option<&Option<Vec<u8>>>| v.and_then(|v| v.as_deref()).map(|b| String::from_utf8_lossy(b).into_owned());
        match r.rows.first() {
            Some(row) => {
                self.state.sql_mode = text(row.first()).unwrap_or_default();
                self.state.charset_client = text(row.get(1)).unwrap_or_default();
                self.state.schema = text(row.get(2));
                self.state.simultaneous_assignment = Some(self.state.sql_mode.to_ascii_uppercase().contains("SIMULTANEOUS_ASSIGNMENT"));
                self.state.settings_fresh = true;
            }
            None => {
                self.state.simultaneous_assignment = None;
                self.state.settings_fresh = false;
            }
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION / COM_CHANGE_USER: the server forgot the
    /// transaction, prepared statements and session variables.
    fn reset_session_state(&mut self) {
        self.txn.end();
        self.stmts.clear();
        self.state.simultaneous_assignment = None;
        self.state.settings_fresh = false;
    }

    /// The one place a statement's end reaches the transaction state.
    pub fn after_statement(&mut self, ctl: &crate::sql::TxControl, sent: &[u8], out: &Outcome, replayable: bool) {
        let lost = matches!(out.err, Some(crate::retry::DEADLOCK))
            || (out.err == Some(crate::retry::LOCK_WAIT_TIMEOUT) && self.rollback_on_timeout != Some(false));
        if lost {
            // ERR carries no status flags: the server has no transaction now.
            self.state.status &= !packets::status::IN_TRANS;
        }
        let in_trans = self.state.in_transaction();
        self.txn.statement_done(StatementEnd {
            ctl,
            err: out.err,
            in_trans,
            saw_idle: out.saw_idle,
            lost,
            sent,
            digest: out.digest,
            replayable,
            record_limit: self.live.config.retry.replay_max_bytes,
        });
    }
}

#[derive(Debug, Default)]
pub(super) struct SideResult {
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub ok: Option<OkInfo>,
    pub err: Option<packets::ErrInfo>,
}

/// A text-protocol row of `columns` values (side queries).
fn text_row(p: &[u8], columns: usize) -> Vec<Option<Vec<u8>>> {
    let mut values = Vec::with_capacity(columns);
    let mut i = 0;
    for _ in 0..columns {
        match p.get(i..).and_then(packets::lenenc_str) {
            Some((v, used)) => {
                values.push(v.map(<[u8]>::to_vec));
                i += used;
            }
            None => break,
        }
    }
    values
}

fn stmt_id(p: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(p.get(1..5)?.try_into().ok()?))
}

fn change_user_name(p: &[u8]) -> String {
    let rest = &p[1..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}
