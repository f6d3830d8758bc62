//! MySQL wire protocol: framing, packet parsing, capability patching and the
//! response state machine. No policy lives here: nothing in `wire` knows
//! about rules, retries or metrics.
pub mod binary;
pub mod caps;
pub mod compress;
pub mod conn;
pub mod packets;
pub mod response;

pub use conn::{PacketIo, WireError};
