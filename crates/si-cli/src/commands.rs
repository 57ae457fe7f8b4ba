//! One module per command group.

pub mod audit;
pub mod deploy;
pub mod gpu;
pub mod health;
pub mod jwt;
pub mod keys;
pub mod ports;
pub mod probe;
pub(crate) mod table;
pub mod up;
pub mod users;
