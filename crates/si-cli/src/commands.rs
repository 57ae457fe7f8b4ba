//! One module per command group.

pub mod health;
pub mod keys;
pub mod users;
