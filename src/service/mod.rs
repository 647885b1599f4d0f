//! Business rules and transaction boundaries.

pub mod chain_health;
pub mod events;
pub mod hosted;
pub mod logos;
pub mod merchants;
pub mod payments;
pub mod pricing;
pub mod sessions;
pub mod sub_merchants;
pub mod webhooks;
