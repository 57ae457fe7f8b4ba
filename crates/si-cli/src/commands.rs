//! One module per command group.

pub mod audit;
pub mod health;
pub mod keys;
pub mod users;
