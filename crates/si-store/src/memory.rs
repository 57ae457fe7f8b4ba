//! The in-process engine: rate-limit counters and failed-login bookkeeping in
//! this process's memory, for a single gateway.

mod rate_limits;
mod throttle;

pub use rate_limits::RateLimits;
pub(crate) use rate_limits::{API_KEY_SCOPE, ClientKey};
pub use throttle::{LoginThrottle, ThrottlePolicy};
