//! Webhooks: endpoint secrets and signatures, target checks, and the dispatcher.

pub mod dispatcher;
pub mod signing;
pub mod target;
