//! The in-process engine: rate-limit counters and failed-login bookkeeping in
//! this process's memory, for a single gateway.

mod rate_limits;
mod throttle;

pub(crate) use rate_limits::ClientKey;
pub use rate_limits::RateLimits;
pub use throttle::{LoginThrottle, ThrottlePolicy};
