//! Business rules and transaction boundaries.

pub mod chain_health;
pub mod error;
pub mod events;
pub mod hosted;
pub mod logos;
pub mod merchants;
pub mod payments;
pub mod pricing;
pub mod sessions;
pub mod sub_merchants;
pub mod webhooks;

pub use error::{ConflictKind, Error, Field};

/// One page of a list, and how many items the whole list holds.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// Which rows a list asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub offset: i64,
}
