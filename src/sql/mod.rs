//! What a statement is, decided once from its text and the connection's
//! lexical modes, before any rule is consulted. The rules' safety gate
//! (`rules::safety`) reads this; the transaction state machine reads
//! [`TxControl`].
pub mod bind;
mod classify;
mod functions;
mod txctl;

pub use classify::{Classified, Factor, Relation, Shape, WriteKind, classify};
pub use functions::{calls_maybe_stored, is_builtin};
pub use txctl::{TxControl, is_plain_commit, tx_control};
