//! What a statement is, decided once from its text and the connection's
//! lexical modes, before any rule is consulted. The rules' safety gate
//! (`rules::safety`) reads this; the transaction state machine reads
//! [`TxControl`].
mod classify;
mod functions;
mod txctl;

pub use classify::{classify, Classified, Factor, Relation, Shape, WriteKind};
pub use functions::is_builtin;
pub use txctl::{tx_control, TxControl};
