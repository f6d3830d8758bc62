//! Prepared statements (binary protocol). thaw keeps what it needs of each
//! statement (its text, parameter count, the settings it was prepared
//! under, the last bound types) and plans every COM_STMT_EXECUTE as the
//! text path plans the same statement with its values written in
//! (`sql::bind`): one planner and one safety gate for both protocols, so
//! every rule, log line and counter of the text path applies unchanged.
//!
//! A plan that changes the statement is executed with the app's binary
//! protocol intact:
//! - a read thaw unlocks runs as a *shadow*: the same text with the lock
//!   clause cut, prepared by thaw on the backend (same parameters, same
//!   columns, so the binary rows reach the client as they are and are
//!   captured on the way);
//! - a guarded write runs as text: the OK/ERR of an UPDATE is the same
//!   packet in both protocols, and its guard and delta hold values thaw
//!   reads from the capture, so a per-value statement would cost a PREPARE
//!   and a CLOSE on every execute.
//!
//! Anything thaw cannot read the same way (long data, a cursor, settings
//! changed since PREPARE, a value with no exact literal) is an unknown
//! statement: validated inside the window, otherwise sent as it came.
use super::SessionError;
use super::command::{Session, cmd};
use super::query::Step;
use crate::ops::metrics::labels;
use crate::retry::record::{assigns_variables, contains_ci, first_keyword};
use crate::rules::Action;
use crate::rules::lex::Modes;
use crate::rules::lock_clause;
use crate::sql::bind::{Quoting, bind, placeholders};
use crate::sql::{self, TxControl};
use crate::wire::binary::{self, BinValue, CURSOR_FLAGS, Execute};
use crate::wire::response::Expect;
use bytes::Bytes;
use std::sync::Arc;

/// Statement id 0xFFFFFFFF: the statement last prepared on the connection.
pub(super) const LAST_PREPARED: u32 = u32::MAX;
/// Shadows kept per connection after their app statement closed, for the
/// next statement of the same text (drivers close and prepare again per
/// request); thaw closes them all when the app runs out of statement slots.
const IDLE_SHADOWS: usize = 4;
/// Prepared text kept for planning; longer statements are not planned.
const MAX_PLANNED_TEXT: usize = 64 * 1024;

/// What the server read a statement's text under, at PREPARE.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PreparedUnder {
    modes: Modes,
    sql_mode: String,
    charset: String,
    /// The server runs a prepared statement in the database it was prepared in.
    schema: Option<String>,
}

/// What the session remembers of a prepared statement.
#[derive(Debug, Default, Clone)]
pub(super) struct Stmt {
    /// CALL: may run several statements and return several results.
    pub call: bool,
    /// SEND_LONG_DATA was used: the server consumes the data on execute.
    pub long_data: bool,
    /// Not plain DML (SET, CALL, ...): may change sql_mode, the character
    /// set or the current database.
    pub changes_settings: bool,
    /// Transaction control the statement is (a prepared COMMIT, ...).
    pub ctl: TxControl,
    /// The text, when thaw may plan it.
    pub sql: Option<Arc<str>>,
    pub params: u16,
    /// `None`: the settings were not known at PREPARE (not planned).
    pub under: Option<PreparedUnder>,
    /// Settings not read at PREPARE: `ConnState::settings_epoch` then. Still
    /// the same at an execute, the settings read then are the PREPARE's.
    pub settings_epoch: Option<u64>,
    /// Types the client bound last (an execute may omit them).
    pub types: Option<Vec<(u8, u8)>>,
    /// The client's last types went to a shadow or to text, not to this
    /// statement on the server: thaw writes them into the next execute.
    pub server_types_stale: bool,
    /// thaw's lock-cut form of this statement on the server, and what it was
    /// prepared for (database, sql_mode, character set, text): kept idle for
    /// a statement of the same text when this one closes.
    pub shadow: Option<u32>,
    pub shadow_key: Option<String>,
    /// An execute opened a cursor on the server's statement: the next
    /// execute must reach that statement to close it, as direct.
    pub cursor_open: bool,
    /// A locking read: its shape and table, for the contention metrics.
    pub locking: Option<(String, String)>,
}

/// How an execute reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Original,
    Shadow,
    Text,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Original => "original",
            Route::Shadow => "shadow",
            Route::Text => "text",
        }
    }
}

impl Session {
    /// 0xFFFFFFFF names the client's last prepared statement: thaw's shadows
    /// are prepared on the same connection, so the server must be told which.
    /// `None`: the client has no last statement (its last PREPARE failed)
    /// while the server's last is a shadow; thaw answers for the server.
    pub(super) fn resolve_id(&self, packet: &Bytes) -> Option<Bytes> {
        match binary::stmt_id(packet) {
            Some(LAST_PREPARED) => match self.last_prepared {
                Some(id) => Some(binary::with_stmt_id(packet, id).into()),
                None if self.shadows > 0 => None,
                None => Some(packet.clone()),
            },
            _ => Some(packet.clone()),
        }
    }

    /// The settings a statement prepared now is read under.
    fn prepared_under(&self) -> PreparedUnder {
        PreparedUnder {
            modes: self.modes(),
            sql_mode: self.state.sql_mode.clone(),
            charset: self.state.charset_client.clone(),
            schema: self.state.schema.clone(),
        }
    }

    /// The server's answer to a command naming a statement it does not have.
    async fn unknown_statement(&mut self, command: &str) -> Result<(), SessionError> {
        let msg = format!("Unknown prepared statement handler ({LAST_PREPARED}) given to {command}");
        self.client.send(&crate::wire::packets::build_err(1243, "HY000", &msg)).await?;
        Ok(self.client.flush().await?)
    }

    pub(super) async fn prepare(&mut self, packet: Bytes) -> Result<(), SessionError> {
        let text = &packet[1..];
        let keyword = first_keyword(text);
        // What the server reads the text under is what thaw must read it
        // under. thaw's settings query is a statement (ROW_COUNT() reads -1
        // after it), and a PREPARE is not: only a statement the rules apply
        // to pays for it now; any other learns its settings at its first
        // planned execute, if nothing may have changed them since.
        if self.rules_apply(text) && !self.state.settings_fresh && !self.all_shadow() {
            self.refresh_settings().await?;
        }
        let under = self.state.settings_fresh.then(|| self.prepared_under());
        let settings_epoch = (!self.state.settings_fresh).then_some(self.state.settings_epoch);
        let sql: Option<Arc<str>> = std::str::from_utf8(text).ok().filter(|t| t.len() <= MAX_PLANNED_TEXT).map(Arc::from);
        let locking = sql.as_deref().and_then(|t| {
            // Classified with zeros for its parameters (a text with `?` is not SQL thaw reads).
            let at = placeholders(t, self.modes()).ok()?;
            let probe = bind(t, &at, &vec![BinValue::Int(0); at.len()], self.modes(), Quoting::Utf8mb4).ok()?;
            let c = sql::classify(probe.as_bytes(), self.modes());
            matches!(c.shape, sql::Shape::Read { locking: true }).then(|| {
                let shape = (crate::rules::fingerprint(t), c.relations.first().map_or_else(|| "?".to_string(), |r| r.name.clone()));
                (shape, self.live.rules.is_candidate(&probe))
            })
        });
        // A governed locking read will most likely run as its shadow: the
        // shadow's PREPARE goes out right before the app's (so the app's is
        // still the server's last statement, with its own warnings), and the
        // first execute waits for no extra round trip.
        let early = match (&locking, sql.as_deref(), under.as_ref()) {
            (Some((_, true)), Some(t), Some(u)) if !self.all_shadow() => cut_lock(t, u.modes)
                .map(|cut| (shadow_key(u, &cut), cut))
                .filter(|(key, _)| !self.idle_shadows.iter().any(|(k, _)| k == key)),
            _ => None,
        };
        if let Some((_, cut)) = &early {
            self.send_shadow_prepare(cut).await?;
        }
        self.server.reset_seq();
        self.send_to_server(&packet).await?;
        let mut shadow = match early {
            Some((key, _)) => self.read_shadow_prepare().await?.map(|(id, params)| (id, params, key)),
            None => None,
        };
        let mut first = self.read_server().await?;
        // thaw's shadows must never cost the app a statement slot: out of
        // slots (1461), they are closed and the PREPARE is sent again.
        if self.shadows > 0 && crate::wire::packets::parse_err(&first).is_some_and(|e| e.code == 1461) {
            if let Some((id, _, _)) = shadow.take() {
                self.close_server_stmt(id).await?;
            }
            self.close_shadows().await?;
            self.server.reset_seq();
            self.send_to_server(&packet).await?;
            first = self.read_server().await?;
        }
        let out = self.relay(first, Expect::Prepare, super::response::RelayOpts::default()).await?;
        let shadow = match shadow {
            Some((id, params, key)) if out.stmt_id.is_some() && params == out.stmt_params => Some((id, key)),
            Some((id, _, _)) => {
                self.close_server_stmt(id).await?;
                None
            }
            None => None,
        };
        let Some(id) = out.stmt_id else {
            // The server's "last statement" is now none (1243 for 0xFFFFFFFF).
            self.last_prepared = None;
            // A refused PREPARE is the statement the diagnostics and
            // ROW_COUNT() (-1) now describe, not a held write before it.
            if out.err.is_some() {
                self.txn.held_last = false;
                self.row_count_after_block = false;
            }
            return Ok(());
        };
        let (shadow, shadow_key) = shadow.unzip();
        self.stmts.insert(
            id,
            Stmt {
                call: keyword == "CALL",
                changes_settings: !super::query::keeps_settings(&keyword),
                ctl: sql::tx_control(text),
                sql,
                params: out.stmt_params,
                under,
                settings_epoch,
                locking: locking.map(|(shape, _)| shape),
                shadow,
                shadow_key,
                ..Stmt::default()
            },
        );
        self.last_prepared = Some(id);
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE: no response.
    pub(super) async fn stmt_no_response(&mut self, packet: Bytes) -> Result<(), SessionError> {
        // The server ignores these for an unknown statement.
        let Some(packet) = self.resolve_id(&packet) else { return Ok(()) };
        if let Some(id) = binary::stmt_id(&packet) {
            if packet[0] == cmd::STMT_CLOSE {
                if let Some(s) = self.stmts.remove(&id)
                    && let (Some(shadow), Some(key)) = (s.shadow, s.shadow_key)
                {
                    self.idle_shadows.push((key, shadow));
                    if self.idle_shadows.len() > IDLE_SHADOWS {
                        let (_, oldest) = self.idle_shadows.remove(0);
                        self.close_server_stmt(oldest).await?;
                    }
                }
                if self.last_prepared == Some(id) {
                    self.last_prepared = None;
                }
            } else if let Some(s) = self.stmts.get_mut(&id) {
                s.long_data = true;
            }
        }
        // Each command starts at sequence 0 (a shadow's CLOSE may have gone first).
        self.server.reset_seq();
        self.server.send(&packet).await?;
        self.server.flush().await?;
        Ok(())
    }

    pub(super) async fn stmt_reset(&mut self, packet: Bytes) -> Result<(), SessionError> {
        let Some(packet) = self.resolve_id(&packet) else { return self.unknown_statement("mysqld_stmt_reset").await };
        if let Some(s) = binary::stmt_id(&packet).and_then(|id| self.stmts.get_mut(&id)) {
            s.long_data = false;
            s.cursor_open = false;
        }
        self.forward(&packet, Expect::OnePacket).await?;
        Ok(())
    }

    pub(super) async fn stmt_fetch(&mut self, packet: Bytes) -> Result<(), SessionError> {
        let Some(packet) = self.resolve_id(&packet) else { return self.unknown_statement("mysqld_stmt_fetch").await };
        self.forward(&packet, Expect::Fetch).await?;
        Ok(())
    }

    pub(super) async fn execute(&mut self, packet: Bytes) -> Result<(), SessionError> {
        let Some(packet) = self.resolve_id(&packet) else { return self.unknown_statement("mysqld_stmt_execute").await };
        let id = binary::stmt_id(&packet).unwrap_or(0);
        let mut stmt = self.stmts.get(&id).cloned();
        let ctl = stmt.as_ref().map(|s| s.ctl.clone()).unwrap_or(TxControl::None);
        if self.answered_for_state(&ctl).await? {
            return Ok(());
        }
        let prepared_text = stmt.as_ref().and_then(|s| s.sql.clone());
        // As for a COM_QUERY (query.rs): after a COMMIT sent as the held
        // writes' block, ROW_COUNT() must read the COMMIT's 0. A text thaw
        // did not keep may read it too.
        if self.row_count_after_block
            && prepared_text.as_deref().is_none_or(|t| contains_ci(t.as_bytes(), b"row_count") || contains_ci(t.as_bytes(), b"found_rows"))
        {
            self.side_query("SET @@SESSION.sql_mode = @@SESSION.sql_mode").await?;
            self.row_count_after_block = false;
        }
        let rules_apply = self.rules_apply(prepared_text.as_deref().unwrap_or_default().as_bytes());
        if rules_apply && !self.state.settings_fresh && !self.all_shadow() {
            self.refresh_settings().await?;
        }
        if let Some(s) = stmt.as_mut()
            && s.under.is_none()
            && self.state.settings_fresh
            && s.settings_epoch == Some(self.state.settings_epoch)
        {
            let under = self.prepared_under();
            s.under = Some(under.clone());
            if let Some(kept) = self.stmts.get_mut(&id) {
                kept.under = Some(under);
                kept.settings_epoch = None;
            }
        }
        let bound = match &stmt {
            Some(s) if rules_apply => self.bind_execute(s, &packet),
            Some(_) => Err("rules do not apply".to_string()),
            None => Err("a statement thaw did not see prepared".to_string()),
        };
        let class = match &bound {
            Ok((_, text)) if rules_apply && !self.txn.captures.is_empty() => Some(sql::classify(text.as_bytes(), self.modes())),
            _ => None,
        };
        let bound_text = bound.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        if !self.txn.deferred.is_empty()
            && !self.before_statement_with_deferred(&ctl, class.as_ref(), bound_text.as_bytes(), &packet).await?
        {
            return Ok(());
        }
        let window = self.txn.captures.has_window() && self.state.statement_in_transaction();
        let step = match &bound {
            _ if !rules_apply => Step::Send(None),
            Ok((_, text)) => self.decide(text.as_bytes(), class.as_ref(), true),
            Err(reason) if window => {
                tracing::info!(%reason, "prepared statement after an unlocked read is validated first");
                Step::ValidateThenSend { reason: format!("a prepared statement thaw cannot read ({reason})"), rewrite: None }
            }
            Err(_) => Step::Send(None),
        };
        let (step, shadowed) = match step {
            Step::Shadow(rw) => (Step::Send(None), rw),
            step => (step, None),
        };
        let text = bound.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        let Some(rewrite) = self.settle(step, text.as_bytes(), class.as_ref()).await? else { return Ok(()) };
        if let Some(rw) = rewrite.as_ref().filter(|rw| rw.action != Action::Unlock && rw.action != Action::Pass)
            && self.try_defer(rw, false).await?
        {
            let sent_types = matches!(&bound, Ok((e, _)) if e.sent_types);
            self.note_types(id, &packet, if sent_types { Route::Text } else { Route::Original });
            return Ok(());
        }
        let exec = bound.ok().map(|(e, _)| e);
        let stmt = stmt.unwrap_or_default();
        let mut route = match &rewrite {
            Some(rw) if rw.action == Action::Unlock => Route::Shadow,
            Some(rw) if rw.action != Action::Pass => Route::Text,
            _ => Route::Original,
        };
        if route != Route::Original && stmt.cursor_open {
            // Direct, this execute closes the statement's open cursor.
            route = Route::Original;
        }
        let shadow = match (route, &exec) {
            (Route::Shadow, Some(e)) => self.shadow_for(id, &stmt, e, rewrite.as_deref().map(|rw| rw.sql.as_str())).await?,
            _ => None,
        };
        if route == Route::Shadow && shadow.is_none() {
            // Keep the app's lock: a read that keeps its lock is always safe.
            route = Route::Original;
        }
        self.shared.metrics.prepared_executes.get_or_create(&labels([("route", route.name().into())])).inc();
        self.note_types(id, &packet, route);
        let in_tx = self.state.in_transaction();
        // As on the text path: an end of the transaction is never sent again.
        let ends_transaction = matches!(stmt.ctl, TxControl::Commit { .. } | TxControl::Rollback { .. } | TxControl::Xa { .. });
        let retry_unsafe =
            stmt.call || stmt.long_data || ends_transaction || stmt.sql.as_deref().is_some_and(|s| assigns_variables(s.as_bytes()));
        let locking = stmt.locking.as_ref().map(|(shape, table)| self.shared.metrics.contention.shape(shape, table));
        if let Some(key) = &locking {
            self.note_locking_shape(key);
        }
        let started = std::time::Instant::now();
        // What a replay re-runs: the app's own statement, with its types.
        let original = self.original_packet(id, &packet);
        let unlock = rewrite.as_ref().filter(|rw| route == Route::Shadow && rw.capture.is_some()).and_then(|rw| rw.capture.clone());
        let class_locking = route == Route::Original
            && (matches!(class.as_ref().map(|c| &c.shape), Some(sql::Shape::Read { locking: true }))
                || rewrite.as_ref().is_some_and(|rw| rw.action == Action::Unlock));
        let (first, sent, expect) = match (route, shadow) {
            (Route::Shadow, Some(sid)) => {
                let payload = self.typed(&binary::with_stmt_id(&packet, sid), &stmt, exec.as_ref());
                (self.send_recovering(&payload, retry_unsafe, in_tx).await?, original.clone(), Expect::Execute)
            }
            (Route::Text, _) => {
                let rw = rewrite.as_ref().expect("text route has a rewrite");
                let mut payload = Vec::with_capacity(rw.sql.len() + 1);
                payload.push(cmd::QUERY);
                payload.extend_from_slice(rw.sql.as_bytes());
                let payload = Bytes::from(payload);
                (self.send_recovering(&payload, false, in_tx).await?, payload, Expect::Query)
            }
            _ => {
                self.types_sent(id);
                if let Some(s) = self.stmts.get_mut(&id) {
                    s.cursor_open = packet.get(5).is_some_and(|flags| flags & CURSOR_FLAGS != 0);
                }
                (self.send_recovering(&original, retry_unsafe, in_tx).await?, original.clone(), Expect::Execute)
            }
        };
        if let Some(key) = &locking {
            self.shared.metrics.contention.ran(key, started.elapsed().as_secs_f64());
        }
        if let Some(rw) = rewrite.as_ref().filter(|rw| rw.violation.is_some() || rw.row.is_some())
            && route != Route::Shadow
            && self.enforce_guard(&first, rw.violation.as_ref(), rw.row.as_ref()).await?
        {
            return Ok(());
        }
        let shadow_read = shadowed.as_ref().filter(|rw| rw.action == Action::Unlock).and_then(|rw| rw.capture.clone());
        let mut out = match shadow_read {
            Some(spec) => self.relay_capturing(first, expect, Some(spec), true, false, false).await?,
            None => {
                let hold = unlock.is_some();
                self.relay_capturing(first, expect, unlock, class_locking, false, hold).await?
            }
        };
        let mut sent = sent;
        if out.held_empty {
            // The unlocked read found no row: run the app's own statement, so
            // its gap lock is taken as it would be direct (get-or-create).
            self.types_sent(id);
            let first = self.send_recovering(&original, false, self.state.in_transaction()).await?;
            out = self.relay_capturing(first, Expect::Execute, None, true, false, false).await?;
            sent = original.clone();
        } else if let Some(rw) = rewrite.as_ref().filter(|_| route != Route::Original).or(shadowed.as_ref())
            && out.err.is_none()
            && !self.matched_nothing(&out)
        {
            self.txn.captures.apply(&rw.on_success);
        }
        // A read planned as unlocked but sent with its lock is followed as locked.
        let followed = match (&rewrite, &shadowed) {
            (_, Some(rw)) => rw.proven,
            (Some(rw), None) => rw.proven && !(route == Route::Original && rw.action == Action::Unlock),
            (None, None) => false,
        };
        if !followed && !self.txn.captures.is_empty() {
            match &class {
                Some(c) => self.forget_what_it_may_have_written(Some(c)),
                None => {
                    for t in self.live.rules.tables() {
                        self.txn.captures.mark_uncertain(None, &t.table);
                    }
                }
            }
        }
        if stmt.changes_settings {
            self.state.settings_may_change();
        }
        // An EXECUTE that opens a cursor returns its rows later, through FETCH.
        let opens_cursor = packet.get(5).is_some_and(|flags| flags & CURSOR_FLAGS != 0);
        self.after_statement(&ctl, &sent, &out, !retry_unsafe && !opens_cursor);
        Ok(())
    }

    /// The execute with its values written into the prepared text, or why not.
    fn bind_execute(&self, stmt: &Stmt, packet: &[u8]) -> Result<(Execute, String), String> {
        let sql = stmt.sql.as_deref().ok_or("statement text too long to plan, or not UTF-8")?;
        if stmt.long_data {
            return Err("parameters sent as long data".into());
        }
        let under = stmt.under.as_ref().ok_or("settings at PREPARE unknown")?;
        if under.modes != self.modes() || under.sql_mode != self.state.sql_mode || under.charset != self.state.charset_client {
            return Err("sql_mode or character set changed since PREPARE".into());
        }
        if under.schema != self.state.schema {
            return Err("the current database changed since PREPARE".into());
        }
        let quoting = Quoting::of(&self.state.charset_client).ok_or("client character set thaw cannot quote in")?;
        let exec = binary::decode_execute(packet, usize::from(stmt.params), stmt.types.as_deref(), &[]).map_err(|e| e.to_string())?;
        if exec.flags & CURSOR_FLAGS != 0 {
            return Err("the execute opens a cursor".into());
        }
        let values: Vec<BinValue> = exec.values.iter().map(|v| v.clone().ok_or("long data")).collect::<Result<_, _>>()?;
        let at = placeholders(sql, under.modes).map_err(|e| e.to_string())?;
        let text = bind(sql, &at, &values, under.modes, quoting).map_err(|e| e.to_string())?;
        Ok((exec, text))
    }

    /// Remember the types an execute bound; a diverted one leaves the
    /// server's statement with older types.
    fn note_types(&mut self, id: u32, packet: &[u8], route: Route) {
        let Some(s) = self.stmts.get_mut(&id) else { return };
        let params = usize::from(s.params);
        if params == 0 {
            return;
        }
        let at = 10 + params.div_ceil(8);
        if packet.get(at) == Some(&1)
            && let Some(raw) = packet.get(at + 1..at + 1 + 2 * params)
        {
            s.types = Some(raw.chunks_exact(2).map(|c| (c[0], c[1])).collect());
            s.server_types_stale = route != Route::Original;
        }
    }

    /// The app's execute with its types written in: what the server's
    /// statement must get after a diverted execute, and what a replay re-runs.
    fn original_packet(&self, id: u32, packet: &Bytes) -> Bytes {
        let Some(s) = self.stmts.get(&id) else { return packet.clone() };
        let Some(types) = &s.types else { return packet.clone() };
        binary::with_types(packet, usize::from(s.params), types).map_or_else(|| packet.clone(), Bytes::from)
    }

    /// The server's statement got the client's last types.
    fn types_sent(&mut self, id: u32) {
        if let Some(s) = self.stmts.get_mut(&id) {
            s.server_types_stale = false;
        }
    }

    /// An execute with its types written in (a shadow may have been last
    /// executed by another statement of the same text).
    fn typed(&self, packet: &[u8], stmt: &Stmt, exec: Option<&Execute>) -> Bytes {
        let types = exec.map(|e| e.types.as_slice()).unwrap_or_default();
        binary::with_types(packet, usize::from(stmt.params), types).unwrap_or_else(|| packet.to_vec()).into()
    }

    /// The shadow of a locking read: prepared once per app statement, in
    /// the same database (the app's statement runs where it was prepared,
    /// and `bind_execute` refused a database change). `None` when it cannot
    /// be made: the read then keeps its lock.
    async fn shadow_for(&mut self, id: u32, stmt: &Stmt, exec: &Execute, planned: Option<&str>) -> Result<Option<u32>, SessionError> {
        let (Some(sql), Some(under)) = (stmt.sql.as_deref(), stmt.under.as_ref()) else { return Ok(None) };
        let Some(shadow_sql) = cut_lock(sql, under.modes) else { return Ok(None) };
        // The shadow with these values must be the very text the planner
        // unlocked; anything else and the app keeps its lock.
        let values: Option<Vec<BinValue>> = exec.values.iter().cloned().collect();
        let quoting = Quoting::of(&under.charset);
        let same = match (values, quoting, placeholders(&shadow_sql, under.modes)) {
            (Some(v), Some(q), Ok(at)) => bind(&shadow_sql, &at, &v, under.modes, q).ok().as_deref() == planned,
            _ => false,
        };
        if !same {
            tracing::debug!("shadow text differs from the planned read; the read keeps its lock");
            return Ok(None);
        }
        if let Some(shadow) = stmt.shadow {
            return Ok(Some(shadow));
        }
        let key = shadow_key(under, &shadow_sql);
        if let Some(pos) = self.idle_shadows.iter().position(|(k, _)| *k == key) {
            let (key, shadow) = self.idle_shadows.remove(pos);
            if let Some(s) = self.stmts.get_mut(&id) {
                s.shadow = Some(shadow);
                s.shadow_key = Some(key);
            }
            return Ok(Some(shadow));
        }
        self.send_shadow_prepare(&shadow_sql).await?;
        match self.read_shadow_prepare().await? {
            Some((shadow, params)) if params == stmt.params => {
                if let Some(s) = self.stmts.get_mut(&id) {
                    s.shadow = Some(shadow);
                    s.shadow_key = Some(key);
                }
                Ok(Some(shadow))
            }
            Some((shadow, _)) => {
                self.close_server_stmt(shadow).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// COM_STMT_PREPARE of a shadow; its answer is read by `read_shadow_prepare`.
    async fn send_shadow_prepare(&mut self, shadow_sql: &str) -> Result<(), SessionError> {
        self.server.reset_seq();
        let mut p = Vec::with_capacity(shadow_sql.len() + 1);
        p.push(cmd::STMT_PREPARE);
        p.extend_from_slice(shadow_sql.as_bytes());
        self.send_to_server(&p).await
    }

    /// The server's answer to a shadow's PREPARE, read silently: the shadow's
    /// id and parameter count (counted in `shadows`), or `None` if the server
    /// refused it (the read then keeps its lock).
    async fn read_shadow_prepare(&mut self) -> Result<Option<(u32, u16)>, SessionError> {
        let first = self.read_server().await?;
        let out = self.relay(first, Expect::Prepare, super::response::RelayOpts { silent: true, ..Default::default() }).await?;
        match out.stmt_id {
            Some(shadow) => {
                self.shadows += 1;
                Ok(Some((shadow, out.stmt_params)))
            }
            None => {
                tracing::warn!(code = ?out.err, "cannot prepare the unlocked form of a read; it keeps its lock");
                Ok(None)
            }
        }
    }

    /// COM_STMT_CLOSE of one of thaw's shadows (no response).
    async fn close_server_stmt(&mut self, shadow: u32) -> Result<(), SessionError> {
        self.shadows = self.shadows.saturating_sub(1);
        self.server.reset_seq();
        let mut close = vec![cmd::STMT_CLOSE];
        close.extend_from_slice(&shadow.to_le_bytes());
        self.send_to_server(&close).await
    }

    pub(super) async fn close_shadows(&mut self) -> Result<(), SessionError> {
        let mut shadows: Vec<u32> = self.idle_shadows.drain(..).map(|(_, id)| id).collect();
        shadows.extend(self.stmts.values_mut().filter_map(|s| {
            s.shadow_key = None;
            s.shadow.take()
        }));
        tracing::info!(shadows = shadows.len(), "out of prepared statement slots: closing thaw's shadow statements");
        for shadow in shadows {
            self.close_server_stmt(shadow).await?;
        }
        Ok(())
    }
}

fn cut_lock(sql: &str, modes: Modes) -> Option<String> {
    lock_clause::cut(sql, modes)
}

/// What a shadow was prepared for: database, sql_mode, character set, text.
fn shadow_key(under: &PreparedUnder, shadow_sql: &str) -> String {
    format!("{}\0{}\0{}\0{shadow_sql}", under.schema.as_deref().unwrap_or_default(), under.sql_mode, under.charset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_clauses_are_cut_from_prepared_text() {
        let m = Modes::default();
        assert_eq!(cut_lock("SELECT * FROM users WHERE id = ? FOR UPDATE", m).as_deref(), Some("SELECT * FROM users WHERE id = ?"));
        assert_eq!(cut_lock("SELECT 1 FROM t WHERE a = ? LOCK IN SHARE MODE", m).as_deref(), Some("SELECT 1 FROM t WHERE a = ?"));
        assert_eq!(cut_lock("SELECT 1 FROM t WHERE a = ?", m), None);
    }
}
