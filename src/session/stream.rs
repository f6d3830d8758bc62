//! Client packets too large to buffer: streamed to the server frame by
//! frame, one read chunk at a time, so a connection holds at most about
//! 64 KiB of such a packet. A streamed COM_QUERY or COM_STMT_EXECUTE is
//! never planned: for the safety model it is an unknown statement
//! (validated first inside the protection window, and afterwards every
//! governed capture is uncertain). It is not retried and not recorded for a
//! replay (thaw no longer has its bytes).
use super::SessionError;
use super::command::{Session, Stmt, cmd};
use super::response::RelayOpts;
use crate::ops::metrics::{command_name, labels};
use crate::retry::record::{contains_ci, first_keyword};
use crate::sql::TxControl;
use crate::wire::WireError;
use crate::wire::binary::{self, stmt_id};
use crate::wire::conn::{MAX_FRAME, Piece, READ_CHUNK};
use crate::wire::packets;
use crate::wire::response::Expect;
use bytes::Bytes;
use std::time::Duration;

/// Bytes of a streamed packet the session sees before it is sent: the
/// command byte, a statement id, the first keywords.
const PREFIX_BYTES: usize = 4096;
/// After the server refused a packet, how long thaw keeps reading (and
/// dropping) the rest of it so the client finishes sending and reads the error.
const DRAIN_AFTER_REFUSAL: Duration = Duration::from_secs(5);

impl Session {
    /// A client command whose first frame header says it is too large to
    /// buffer (`reason`: `size` or `budget`). `Ok(false)`: close.
    pub(super) async fn dispatch_streamed(&mut self, reason: &'static str) -> Result<bool, SessionError> {
        let (first_len, prefix) = match self.client.begin_stream(PREFIX_BYTES).await {
            Ok(x) => x,
            Err(e) => return Err(self.client_read_failed(e).await),
        };
        let command = prefix[0];
        self.shared.metrics.command(command).inc();
        self.shared.metrics.streamed_packets.get_or_create(&labels([("reason", reason.into())])).inc();
        tracing::debug!(first_frame = first_len, command = command_name(command), reason, "client packet streamed to the server");
        self.server.reset_seq();
        if self.state.in_transaction() {
            self.txn.recorder.mark("a command too large to record ran inside the transaction");
        }
        match command {
            cmd::QUERY | cmd::STMT_EXECUTE => self.streamed_statement(first_len, prefix).await?,
            cmd::STMT_SEND_LONG_DATA => {
                // An unknown statement: the server would ignore it, so it gets id 0 (never assigned).
                let prefix = self.resolve_id(&prefix).unwrap_or_else(|| binary::with_stmt_id(&prefix, 0).into());
                if let Some(s) = stmt_id(&prefix).and_then(|id| self.stmts.get_mut(&id)) {
                    s.long_data = true;
                }
                // No response.
                self.stream_to_server(first_len, &prefix).await?;
            }
            cmd::STMT_PREPARE => {
                let call = first_keyword(&prefix[1..]) == "CALL";
                self.stream_to_server(first_len, &prefix).await?;
                let first = self.read_server().await?;
                let out = self.relay(first, Expect::Prepare, RelayOpts::default()).await?;
                self.last_prepared = out.stmt_id;
                if let Some(id) = out.stmt_id {
                    // Too large to plan: never planned (no text kept).
                    self.stmts.insert(id, Stmt { call, changes_settings: true, params: out.stmt_params, ..Stmt::default() });
                }
            }
            cmd::QUIT
            | cmd::INIT_DB
            | cmd::FIELD_LIST
            | cmd::REFRESH
            | cmd::SHUTDOWN
            | cmd::STATISTICS
            | cmd::PROCESS_INFO
            | cmd::PROCESS_KILL
            | cmd::DEBUG
            | cmd::PING
            | cmd::CHANGE_USER
            | cmd::STMT_CLOSE
            | cmd::STMT_RESET
            | cmd::SET_OPTION
            | cmd::STMT_FETCH
            | cmd::RESET_CONNECTION
            | cmd::SLEEP => {
                // No other command thaw relays has a reason to be this large.
                self.discard_streamed().await?;
                self.shared.metrics.packets_too_large.get_or_create(&labels([("phase", "command".into())])).inc();
                tracing::warn!(first_frame = first_len, command = command_name(command), "command too large to relay; closing");
                let limit = self.shared.config.limits.connection_buffer_bytes;
                super::refuse_too_large(&mut self.client, "limits.connection_buffer_bytes", limit).await?;
                return Ok(false);
            }
            _ => {
                // Refused whatever its size, as a buffered one is: read it to its end first.
                self.discard_streamed().await?;
                let msg = format!("thaw: command 0x{command:02x} is not supported through thaw");
                super::handshake::refuse(&mut self.client, 1047, "08S01", &msg).await?;
            }
        }
        Ok(true)
    }

    /// COM_QUERY / COM_STMT_EXECUTE too large to plan: an unknown statement.
    async fn streamed_statement(&mut self, first_len: usize, prefix: Bytes) -> Result<(), SessionError> {
        let command = prefix[0];
        let (first_len, prefix) =
            if command == cmd::STMT_EXECUTE { self.streamed_execute(first_len, prefix)? } else { (first_len, prefix) };
        if let Some(err) = self.txn.aborted().cloned() {
            self.discard_streamed().await?;
            return self.answer_aborted(err).await;
        }
        if !self.txn.deferred.is_empty() && !self.flush_deferred("statement").await? {
            return Ok(());
        }
        if self.txn.captures.has_window()
            && self.state.statement_in_transaction()
            && !self.validate_or_abort("statement too large to plan").await?
        {
            return Ok(());
        }
        let allow_infile = command == cmd::QUERY && first_keyword(&prefix[1..]) == "LOAD" && contains_ci(&prefix[1..], b"LOCAL");
        // Validation's side queries may have run since the command arrived.
        self.server.reset_seq();
        self.stream_to_server(first_len, &prefix).await?;
        let first = self.read_server().await?;
        let expect = if command == cmd::QUERY { Expect::Query } else { Expect::Execute };
        let out = self.relay(first, expect, RelayOpts { allow_infile, ..RelayOpts::default() }).await?;
        // It may have written any governed row, or changed any setting.
        if !self.txn.captures.is_empty() {
            for t in self.live.rules.tables() {
                self.txn.captures.mark_uncertain(None, &t.table);
            }
        }
        self.state.settings_may_change();
        self.after_statement(&TxControl::None, &prefix, &out, false);
        Ok(())
    }

    /// A streamed COM_STMT_EXECUTE names its statement by id (0xFFFFFFFF
    /// resolved) and carries the types the server's statement must use: the
    /// client's last ones may have gone to a shadow or to text instead.
    fn streamed_execute(&mut self, first_len: usize, prefix: Bytes) -> Result<(usize, Bytes), SessionError> {
        let prefix = self.resolve_id(&prefix).unwrap_or_else(|| binary::with_stmt_id(&prefix, 0).into());
        let Some(s) = stmt_id(&prefix).and_then(|id| self.stmts.get_mut(&id)) else { return Ok((first_len, prefix)) };
        // Direct, this execute closes the statement's cursor and sets the
        // types later executes reuse.
        s.cursor_open = prefix.get(5).is_some_and(|f| f & binary::CURSOR_FLAGS != 0);
        let params = usize::from(s.params);
        let at = 10 + params.div_ceil(8);
        if params > 0
            && prefix.get(at) == Some(&1)
            && let Some(raw) = prefix.get(at + 1..at + 1 + 2 * params)
        {
            s.types = Some(raw.chunks_exact(2).map(|c| (c[0], c[1])).collect());
            s.server_types_stale = false;
            return Ok((first_len, prefix));
        }
        let Some(types) = s.types.as_ref().filter(|_| s.server_types_stale) else { return Ok((first_len, prefix)) };
        match binary::with_types(&prefix, usize::from(s.params), types) {
            Some(p) if first_len + (p.len() - prefix.len()) < MAX_FRAME => {
                s.server_types_stale = false;
                Ok((first_len + (p.len() - prefix.len()), p.into()))
            }
            _ => Err(SessionError::Protocol("streamed execute of 16 MiB or more without parameter types after a diverted execute")),
        }
    }

    /// Send the packet begun by `begin_stream` to the server: its first frame
    /// (`first_len`, starting with `prefix`), then every further piece.
    pub(super) async fn stream_to_server(&mut self, first_len: usize, prefix: &[u8]) -> Result<(), SessionError> {
        self.server.start_frame(first_len);
        if let Err(e) = self.server.write_raw(prefix).await {
            return Err(self.backend_write_failed(e).await);
        }
        loop {
            let piece = match self.client.next_piece().await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err(self.client_read_failed(e).await),
            };
            let written = match piece {
                Piece::Frame(n) => {
                    self.server.start_frame(n);
                    Ok(())
                }
                Piece::Data(d) => self.server.write_raw(&d).await,
            };
            if let Err(e) = written {
                return Err(self.backend_write_failed(e).await);
            }
        }
        if let Err(e) = self.server.flush().await {
            return Err(self.backend_write_failed(e).await);
        }
        Ok(())
    }

    /// Read the rest of a streamed client packet and drop it (no-op when
    /// none is in progress): before thaw answers a command itself.
    pub(super) async fn discard_streamed(&mut self) -> Result<(), SessionError> {
        loop {
            match self.client.next_piece().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.client_read_failed(e).await),
            }
        }
    }

    /// Send a whole packet to the server; a failed write may be the server
    /// refusing it (see [`backend_write_failed`](Self::backend_write_failed)).
    pub(super) async fn send_to_server(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let sent = match self.server.send(payload).await {
            Ok(()) => self.server.flush().await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e @ WireError::Io(_)) => Err(self.backend_write_failed(e).await),
            Err(e) => Err(e.into()),
        }
    }

    /// A write to the server failed. A server refusing a packet over its
    /// max_allowed_packet sends ERR 1153 and closes, so the write fails but
    /// the ERR is still there to read: the client gets it as the server sent
    /// it (after the rest of its packet is read and dropped, for at most a
    /// few seconds, so it can finish sending and read it), then the
    /// connection closes.
    pub(super) async fn backend_write_failed(&mut self, e: WireError) -> SessionError {
        let read = tokio::time::timeout(Duration::from_secs(2), self.server.read()).await;
        let Ok(Ok(Some(p))) = read else { return e.into() };
        let Some(err) = packets::parse_err(&p) else { return e.into() };
        tracing::info!(code = err.code, "backend refused the command and closed the connection");
        self.shared.metrics.backend_errors.get_or_create(&labels([("code", err.code.to_string())])).inc();
        // Read the rest of what the client is sending (bounded in time, not
        // buffered), so it can finish and read the error; the ERR then follows
        // its last frame. If it never finishes, the server's numbering is kept.
        let drained = tokio::time::timeout(DRAIN_AFTER_REFUSAL, async {
            loop {
                match self.client.next_piece().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if drained != Ok(true) {
            self.client.set_seq(self.server.seq().wrapping_sub(1));
        }
        let _ = self.client.send(&p).await;
        let _ = self.client.flush().await;
        SessionError::BackendClosed
    }

    /// LOAD DATA LOCAL: the client's file packets go to the server up to and
    /// including the empty packet that ends them; large ones are streamed.
    pub(super) async fn relay_upload(&mut self) -> Result<(), SessionError> {
        loop {
            let len = match self.client.next_frame_len().await {
                Ok(Some(len)) => len,
                Ok(None) => return Err(SessionError::ClientClosed),
                Err(e) => return Err(self.client_read_failed(e).await),
            };
            if len > READ_CHUNK {
                let (first_len, prefix) = match self.client.begin_stream(0).await {
                    Ok(x) => x,
                    Err(e) => return Err(self.client_read_failed(e).await),
                };
                self.stream_to_server(first_len, &prefix).await?;
                continue;
            }
            let p = match self.client.read().await {
                Ok(Some(p)) => p,
                Ok(None) => return Err(SessionError::ClientClosed),
                Err(e) => return Err(self.client_read_failed(e).await),
            };
            self.server.send(&p).await?;
            if p.is_empty() {
                self.server.flush().await?;
                return Ok(());
            }
        }
    }
}
