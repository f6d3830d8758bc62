//! The one response reader. Every response thaw reads from the server goes
//! through [`Session::read_response`], with sinks that say where it goes:
//! to the client (relay), into the captures, into a replay digest, into a
//! row list (thaw's own side queries), or held back until its first row.
use super::SessionError;
use super::capture::ResultCapture;
use super::command::{Session, cmd};
use crate::ops::metrics::labels;
use crate::retry::ResponseDigest;
use crate::wire::conn::{Piece, READ_CHUNK};
use crate::wire::packets::{self, ErrInfo, OkInfo};
use crate::wire::response::{Expect, Part, Response};
use bytes::Bytes;

/// Where a response goes.
#[derive(Default)]
pub(super) struct RelayOpts<'a, 'r> {
    /// thaw's own query (side query, replay): nothing reaches the client.
    pub silent: bool,
    /// The client sent LOAD DATA LOCAL: its file request is the client's to
    /// answer. Otherwise thaw answers "no file".
    pub allow_infile: bool,
    /// Capture sink: governed rows shown update the captures.
    pub rows: Option<&'a mut ResultCapture<'r>>,
    /// Keep the response from the client until its first row: a read thaw
    /// unlocked that finds nothing is re-run with its lock instead.
    pub hold_until_row: bool,
    /// Text rows, for side queries.
    pub collect: Option<&'a mut Vec<Vec<Option<Vec<u8>>>>>,
}

/// What a response was, as far as the session cares.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub digest: u64,
    pub err: Option<u16>,
    pub err_info: Option<ErrInfo>,
    pub ok: Option<OkInfo>,
    pub stmt_id: Option<u32>,
    /// Parameters of the statement a PREPARE_OK announced.
    pub stmt_params: u16,
    pub result_sets: u32,
    /// A status during the response had IN_TRANS clear.
    pub saw_idle: bool,
    /// `hold_until_row` and the result had no row: nothing reached the client.
    pub held_empty: bool,
    /// The server asked for a local file and thaw answered for the client.
    pub refused_file: bool,
}

#[derive(Debug, Default)]
pub(super) struct SideResult {
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub err: Option<ErrInfo>,
}

impl Session {
    /// Send a command unchanged and relay its whole response.
    pub async fn forward(&mut self, packet: &[u8], expect: Expect) -> Result<Outcome, SessionError> {
        // A side query may have run since the command arrived.
        self.server.reset_seq();
        self.send_to_server(packet).await?;
        let first = self.read_server().await?;
        self.relay(first, expect, RelayOpts::default()).await
    }

    pub async fn read_server(&mut self) -> Result<Bytes, SessionError> {
        let p = self.server.read().await;
        self.server_read_result(p)
    }

    /// A backend that reset the connection is shown to the client as a
    /// reset too (drivers report "gone away" vs "lost connection" by it).
    pub(super) fn server_read_result(&mut self, p: Result<Option<Bytes>, crate::wire::WireError>) -> Result<Bytes, SessionError> {
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

    /// Relay a response to the client (or read it silently), starting with
    /// its already-read first packet.
    pub async fn relay(&mut self, first: Bytes, expect: Expect, mut opts: RelayOpts<'_, '_>) -> Result<Outcome, SessionError> {
        let mut resp = Response::new(expect, self.state.deprecate_eof());
        let mut digest = ResponseDigest::default();
        let mut out = Outcome::default();
        let mut held: Option<Vec<Bytes>> = (opts.hold_until_row && !opts.silent).then(Vec::new);
        let mut columns = 0usize;
        let mut packet = first;
        loop {
            let step = resp.feed(&packet)?;
            if let Some(s) = step.status {
                self.state.status = s;
                out.saw_idle |= s & packets::status::IN_TRANS == 0;
            }
            match step.part {
                Part::Err => {
                    let e = packets::parse_err(&packet);
                    let code = e.as_ref().map_or(0, |e| e.code);
                    out.err = Some(code);
                    out.err_info = e;
                    if !opts.silent {
                        self.shared.metrics.backend_errors.get_or_create(&labels([("code", code.to_string())])).inc();
                    }
                }
                Part::Ok => out.ok = packets::parse_ok(&packet, self.state.session_track()),
                Part::ColumnCount(_) => {
                    out.result_sets += 1;
                    columns = 0;
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.result_set();
                    }
                }
                Part::ColumnDef => {
                    columns += 1;
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.column(&packet);
                    }
                }
                Part::Row => {
                    if let Some(rows) = opts.rows.as_deref_mut() {
                        rows.row(&packet);
                    }
                    if let Some(c) = opts.collect.as_deref_mut() {
                        c.push(text_row(&packet, columns));
                    }
                }
                Part::PrepareOk { stmt_id, params, .. } => {
                    out.stmt_id = Some(stmt_id);
                    out.stmt_params = params;
                }
                Part::LocalInfile if opts.silent || !opts.allow_infile => {
                    // Only a LOAD DATA LOCAL the client sent may read client files:
                    // answer for the client with "no file" and keep reading.
                    if !opts.silent {
                        tracing::warn!("backend asked for a local file the client did not request; refused");
                    }
                    out.refused_file = true;
                    self.server.send(&[]).await?;
                    self.server.flush().await?;
                    packet = self.read_server().await?;
                    continue;
                }
                _ => {}
            }
            digest.add(&packet);
            if opts.silent {
                if step.done {
                    break;
                }
                while resp.in_rows() && opts.collect.is_none() && self.next_is_large().await? {
                    resp.large_row();
                    self.stream_row(&mut digest, true).await?;
                }
                packet = self.read_server().await?;
                continue;
            }
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
            // A large row is streamed to the client frame by frame, never
            // buffered whole (thaw's own side queries read small rows only).
            while resp.in_rows() && opts.collect.is_none() && self.next_is_large().await? {
                let step = resp.large_row();
                if let Some(rows) = opts.rows.as_deref_mut() {
                    rows.row_not_read();
                }
                if let Some(h) = held.take() {
                    for p in h {
                        self.client.send(&p).await?;
                    }
                }
                self.stream_row(&mut digest, opts.silent).await?;
                debug_assert!(!step.done);
            }
            packet = self.read_server().await?;
        }
        if !opts.silent {
            self.client.flush().await?;
        }
        out.digest = digest.finish();
        Ok(out)
    }

    /// The next server packet's first frame is over [`READ_CHUNK`]: stream it.
    async fn next_is_large(&mut self) -> Result<bool, SessionError> {
        match self.server.next_frame_len().await {
            Ok(Some(len)) => Ok(len > READ_CHUNK),
            Ok(None) => Err(SessionError::BackendClosed),
            Err(e) => Err(e.into()),
        }
    }

    /// Relay one streamed row (to nowhere when `silent`), digesting it as it passes.
    async fn stream_row(&mut self, digest: &mut ResponseDigest, silent: bool) -> Result<(), SessionError> {
        let (first_len, prefix) = self.server.begin_stream(READ_CHUNK).await?;
        let mut total = prefix.len();
        digest.bytes(&prefix);
        if !silent {
            self.client.start_frame(first_len);
            self.client.write_raw(&prefix).await?;
        }
        while let Some(piece) = self.server.next_piece().await? {
            match piece {
                Piece::Frame(n) => {
                    if !silent {
                        self.client.start_frame(n);
                    }
                }
                Piece::Data(d) => {
                    total += d.len();
                    digest.bytes(&d);
                    if !silent {
                        self.client.write_raw(&d).await?;
                    }
                }
            }
        }
        digest.end_packet(total);
        Ok(())
    }

    /// Run a statement of thaw's own on the backend; nothing reaches the client.
    pub async fn side_query(&mut self, sql: &str) -> Result<SideResult, SessionError> {
        self.server.reset_seq();
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(cmd::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.server.send(&payload).await?;
        self.server.flush().await?;
        let first = self.read_server().await?;
        let mut rows = Vec::new();
        let out = self.relay(first, Expect::Query, RelayOpts { silent: true, collect: Some(&mut rows), ..RelayOpts::default() }).await?;
        Ok(SideResult { rows, err: out.err_info })
    }

    /// Read a whole response without forwarding it (a replayed statement):
    /// its digest, or `None` if it asked for a file.
    pub(super) async fn read_digest(&mut self, expect: Expect) -> Result<Option<u64>, SessionError> {
        let first = self.read_server().await?;
        let out = self.relay(first, expect, RelayOpts { silent: true, ..RelayOpts::default() }).await?;
        Ok((!out.refused_file).then_some(out.digest))
    }
}

/// A text-protocol row of `columns` values.
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
