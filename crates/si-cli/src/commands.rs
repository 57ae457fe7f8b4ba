//! One module per command group.

pub mod audit;
pub mod health;
pub mod jwt;
pub mod keys;
pub mod probe;
pub mod users;
