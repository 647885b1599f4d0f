//! TRON sweeps: `sweep plan` reads balances and resources online and writes a plan; `sweep
//! sign` signs its USDT transfers offline from the mnemonic; `sweep broadcast` activates the
//! addresses, lends them energy, sends the transfers and takes the energy back, recording
//! everything as a sweep.
//!
//! - [`protocol`]: the protobuf messages, transaction ids and signatures;
//! - [`api`]: the node's HTTP API (`/wallet/...`);
//! - [`plan`]: the plan, and how it is made;
//! - [`sign`]: offline signing;
//! - [`broadcast`]: sending a signed plan, step by step, and recording it.

pub mod api;
pub mod broadcast;
pub mod plan;
pub mod protocol;
pub mod sign;

pub use protocol::*;
