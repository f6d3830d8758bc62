//! Command phase: read one client command, relay it, relay its response to
//! the end, repeat. The client is not read while a response is in flight
//! (pipelined commands wait in the buffer), except for a LOCAL INFILE upload.
use super::handshake::{self, ClientIo, ServerIo};
use super::response::Outcome;
use super::state::ConnState;
use super::txn::{StatementEnd, Txn};
use super::{SessionError, Shared};
use crate::ops::metrics::labels;
use crate::ops::reload::Generation;
use crate::wire::WireError;
use crate::wire::conn::{MAX_FRAME, READ_CHUNK};
use crate::wire::packets;
use crate::wire::response::Expect;
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

/// How a client packet is read, decided from its first frame header.
enum Admit {
    /// Read it whole; a packet over 64 KiB holds bytes of the global budget.
    Buffer(Option<super::budget::Reservation>),
    /// Too large to buffer (reason `size` or `budget`): streamed to the server.
    Stream(&'static str),
}

pub(super) use super::prepared::Stmt;

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
    /// The client's last successful PREPARE (what id 0xFFFFFFFF names).
    pub last_prepared: Option<u32>,
    /// thaw's lock-cut shadow statements on the server (one per app statement at most).
    pub shadows: usize,
    /// Shadows whose app statement closed, kept for the next of the same text: (key, server id).
    pub idle_shadows: Vec<(String, u32)>,
    /// Governed tables known to have no triggers (`defer_writes`), by schema and table.
    pub trigger_free: HashMap<(String, String), bool>,
    /// The last statement the server ran was a COMMIT block of held writes:
    /// its ROW_COUNT() is theirs, not the 0 of the app's COMMIT.
    pub row_count_after_block: bool,
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
            last_prepared: None,
            shadows: 0,
            idle_shadows: Vec::new(),
            trigger_free: HashMap::new(),
            row_count_after_block: false,
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
            // Only the frame header is awaited here: whether the packet is
            // buffered or streamed is decided from it, before its body is read.
            let len = tokio::select! {
                l = client.next_frame_len() => match l {
                    Ok(Some(l)) => l,
                    Ok(None) => return Err(SessionError::ClientClosed),
                    Err(e) => return Err(self.client_read_failed(e).await),
                },
                p = server.read() => return self.unsolicited(p).await,
                _ = drain.changed(), if !draining => continue,
            };
            // A reload while the session waited applies from this command on,
            // if no transaction is open.
            if !self.state.in_transaction() && self.gen_rx.has_changed().unwrap_or(false) {
                self.live = self.gen_rx.borrow_and_update().clone();
            }
            let started = Instant::now();
            let keep_going = match self.admit(len) {
                Admit::Buffer(reservation) => {
                    let packet = match self.client.read().await {
                        Ok(Some(p)) if !p.is_empty() => p,
                        Ok(Some(_)) => return Err(SessionError::Protocol("empty command packet")),
                        Ok(None) => return Err(SessionError::ClientClosed),
                        Err(e) => return Err(self.client_read_failed(e).await),
                    };
                    self.shared.metrics.command(packet[0]).inc();
                    let keep_going = self.dispatch(packet).await?;
                    drop(reservation);
                    keep_going
                }
                Admit::Stream(reason) => self.dispatch_streamed(reason).await?,
            };
            self.shared.metrics.statement_seconds.observe(started.elapsed().as_secs_f64());
            if !keep_going {
                return Ok(());
            }
        }
    }

    /// Buffer the client packet whose first frame is `len` bytes, or stream it.
    fn admit(&self, len: usize) -> Admit {
        if len <= READ_CHUNK {
            return Admit::Buffer(None);
        }
        // A full frame means more follow: a packet of 16 MiB or more is always streamed.
        if len >= MAX_FRAME || len > self.shared.config.limits.connection_buffer_bytes {
            return Admit::Stream("size");
        }
        match self.shared.buffers.try_reserve(len) {
            Some(r) => Admit::Buffer(Some(r)),
            None => Admit::Stream("budget"),
        }
    }

    /// A client read failed: a packet over `max_packet_bytes` gets ERR 1153.
    pub(super) async fn client_read_failed(&mut self, e: WireError) -> SessionError {
        if let WireError::TooLarge(n, max) = e {
            self.shared.metrics.packets_too_large.get_or_create(&labels([("phase", "command".into())])).inc();
            tracing::warn!(bytes = n, limit = max, "client packet over max_packet_bytes; closing");
            let _ = super::refuse_too_large(&mut self.client, "max_packet_bytes", max).await;
        }
        e.into()
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
        // Held-back writes go first before a command that may observe them.
        if !self.txn.deferred.is_empty()
            && !matches!(
                command,
                cmd::QUERY
                    | cmd::STMT_EXECUTE
                    | cmd::STMT_PREPARE
                    | cmd::STMT_CLOSE
                    | cmd::STMT_RESET
                    | cmd::STMT_SEND_LONG_DATA
                    | cmd::PING
                    | cmd::STATISTICS
                    | cmd::QUIT
                    | cmd::RESET_CONNECTION
                    | cmd::CHANGE_USER
            )
            && !self.flush_deferred("command").await?
        {
            return Ok(true);
        }
        match command {
            cmd::QUIT => {
                self.server.send(&packet).await?;
                self.server.flush().await?;
                return Ok(false);
            }
            cmd::QUERY => self.query(packet, in_tx_before).await?,
            cmd::STMT_EXECUTE => self.execute(packet).await?,
            cmd::STMT_PREPARE => self.prepare(packet).await?,
            // No response: waiting for one would deadlock.
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => self.stmt_no_response(packet).await?,
            cmd::STMT_RESET => self.stmt_reset(packet).await?,
            cmd::STMT_FETCH => self.stmt_fetch(packet).await?,
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
                    self.state.settings_may_change();
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
        let r = self.side_query("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, DATABASE(), @@SESSION.completion_type, @@SESSION.session_track_transaction_info, @@SESSION.lc_messages").await?;
        let text = |v: Option<&Option<Vec<u8>>>| v.and_then(|v| v.as_deref()).map(|b| String::from_utf8_lossy(b).into_owned());
        match r.rows.first() {
            Some(row) => {
                self.state.sql_mode = text(row.first()).unwrap_or_default();
                self.state.charset_client = text(row.get(1)).unwrap_or_default();
                self.state.schema = text(row.get(2));
                self.state.completion_type = text(row.get(3)).unwrap_or_default();
                self.state.tracks_transactions = text(row.get(4)).is_some_and(|v| !v.eq_ignore_ascii_case("OFF"));
                self.state.english_messages = text(row.get(5)).is_some_and(|v| v.to_ascii_lowercase().starts_with("en_"));
                self.state.simultaneous_assignment = Some(self.state.sql_mode.to_ascii_uppercase().contains("SIMULTANEOUS_ASSIGNMENT"));
                self.state.settings_fresh = true;
            }
            None => {
                self.state.simultaneous_assignment = None;
                self.state.settings_may_change();
            }
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION / COM_CHANGE_USER: the server forgot the
    /// transaction, prepared statements and session variables.
    fn reset_session_state(&mut self) {
        self.txn.end();
        self.txn.xa = false;
        self.stmts.clear();
        self.last_prepared = None;
        self.shadows = 0;
        self.idle_shadows.clear();
        self.state.simultaneous_assignment = None;
        self.state.settings_may_change();
    }

    /// The one place a statement's end reaches the transaction state.
    pub fn after_statement(&mut self, ctl: &crate::sql::TxControl, sent: &[u8], out: &Outcome, replayable: bool) {
        // The server ran a statement after any held-back write was answered.
        self.txn.held_last = false;
        self.row_count_after_block = false;
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

fn change_user_name(p: &[u8]) -> String {
    let rest = &p[1..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}
