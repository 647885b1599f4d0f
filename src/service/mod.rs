//! Business rules and transaction boundaries.

pub mod merchants;
pub mod pricing;
pub mod sessions;
pub mod sub_merchants;
