//! Operating thaw: metrics, the admin HTTP listener, reloads.
pub mod admin;
pub mod contention;
pub mod metrics;
pub mod reload;
pub mod throttle;

pub use metrics::Metrics;
