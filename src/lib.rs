//! thaw: a MySQL/MariaDB wire-protocol sidecar that removes lock contention
//! from check-then-write flows without changing the application.
//!
//! Folders say what they own:
//! - `wire`: packets, framing, capability patching, response state machine (no policy)
//! - `session`: one task per client connection, handshake and command relay
//! - `rules`: rule files, statement matching, rewrite plans and text splicing
//! - `retry`: lock-error retry and transaction replay policy
//! - `ops`: metrics, admin HTTP, reload
//! - `explain`: `thaw explain --file`, a statement file run offline through the session's decisions
//! - `cli`: command line
pub mod cli;
pub mod config;
pub mod explain;
pub mod ops;
pub mod retry;
pub mod rules;
pub mod server;
pub mod session;
pub mod sql;
pub mod wire;
