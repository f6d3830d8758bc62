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
    /// The backend is MariaDB (anonymous compound statements: `defer_writes`).
    pub mariadb: bool,
    /// sql_mode, character_set_client and the current database as the server
    /// last reported them; `settings_fresh` is false after anything that may
    /// have changed them (SET, CALL, multi-statements, ...), and they are
    /// read again before the next statement the rules plan.
    pub settings_fresh: bool,
    /// Counts the times `settings_fresh` went false (`settings_may_change`):
    /// unchanged, the settings are still what they were when it was read.
    pub settings_epoch: u64,
    pub sql_mode: String,
    pub charset_client: String,
    /// @@SESSION.completion_type (`NO_CHAIN`, `CHAIN`, `RELEASE`), as last read.
    pub completion_type: String,
    /// session_track_transaction_info is not OFF: OK packets carry the transaction's state.
    pub tracks_transactions: bool,
    /// lc_messages is English: OK info strings read `Rows matched: ...`.
    pub english_messages: bool,
}

impl ConnState {
    /// Something may have changed sql_mode, the character set or the database.
    pub fn settings_may_change(&mut self) {
        self.settings_fresh = false;
        self.settings_epoch += 1;
    }

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
        self.status & status::ANSI_QUOTES != 0 || self.sql_mode.to_ascii_uppercase().split(',').any(|f| f == "ANSI_QUOTES")
    }
    pub fn deprecate_eof(&self) -> bool {
        self.caps & caps::DEPRECATE_EOF != 0
    }
    pub fn session_track(&self) -> bool {
        self.caps & caps::SESSION_TRACK != 0
    }
    /// thaw's lexer reads statements in this character set as the server
    /// does: single-byte or UTF-8 (in a multi-byte set such as GBK or SJIS a
    /// 0x5C byte may end a character instead of escaping a quote).
    pub fn charset_parsable(&self) -> bool {
        matches!(self.charset_client.to_ascii_lowercase().as_str(), "utf8" | "utf8mb3" | "utf8mb4" | "latin1" | "ascii" | "binary")
    }

    /// sql_mode flags that change how thaw would have to read an expression.
    /// IGNORE_SPACE is not one: the parser thaw uses always reads `name (`
    /// as a call, as the server does under it (and the function names it
    /// reserves only make the server refuse more). Node's mysql2 and mariadb
    /// drivers ask for it in every handshake.
    pub fn sql_mode_unsupported(&self) -> bool {
        let m = self.sql_mode.to_ascii_uppercase();
        m.split(',').any(|f| matches!(f, "PIPES_AS_CONCAT" | "HIGH_NOT_PRECEDENCE" | "ANSI"))
    }

    pub fn found_rows(&self) -> bool {
        self.caps & caps::FOUND_ROWS != 0
    }
}
