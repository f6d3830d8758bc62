//! What a session knows about its connection, as plain data the rules and
//! retry code read. Updated only from what the server said (status flags of
//! OK/EOF packets), never from statement text such as BEGIN.
use crate::wire::caps;
use crate::wire::packets::status;

#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// Capabilities in force on this connection (client's request after masking).
    pub caps: u32,
    /// Status flags of the last OK/EOF the server sent.
    pub status: u16,
    pub schema: Option<String>,
    pub user: String,
    /// The backend's connection id, as the client sees it in the greeting.
    pub thread_id: u32,
    /// Multi-statements, from the handshake and COM_SET_OPTION.
    pub multi_statements: bool,
    /// `None` until read from the server, and again after anything that may change it.
    pub simultaneous_assignment: Option<bool>,
    /// thaw's leg to the server is TLS (COM_CHANGE_USER re-runs auth over it).
    pub tls_backend: bool,
}

impl ConnState {
    pub fn in_transaction(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }
    pub fn autocommit(&self) -> bool {
        self.status & status::AUTOCOMMIT != 0
    }
    /// A statement sent now runs inside a transaction (open, or opened implicitly).
    pub fn statement_in_transaction(&self) -> bool {
        self.in_transaction() || !self.autocommit()
    }
    pub fn no_backslash_escapes(&self) -> bool {
        self.status & status::NO_BACKSLASH_ESCAPES != 0
    }
    pub fn ansi_quotes(&self) -> bool {
        self.status & status::ANSI_QUOTES != 0
    }
    pub fn deprecate_eof(&self) -> bool {
        self.caps & caps::DEPRECATE_EOF != 0
    }
    pub fn session_track(&self) -> bool {
        self.caps & caps::SESSION_TRACK != 0
    }
    pub fn found_rows(&self) -> bool {
        self.caps & caps::FOUND_ROWS != 0
    }
}
