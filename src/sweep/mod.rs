//! Collecting the money: deposit addresses delegate (EIP-7702) to a contract that can only
//! send their balances to the merchant's treasury; a gas tank pays for batched sweeps.
//!
//! - [`delegate`]: the `SweepDelegate` contract, its deterministic address, its calls;
//! - [`authorize`]: offline signing of the authorizations from the merchant's mnemonic;
//! - [`sweeper`]: the worker that plans, sends and records the sweeps.

pub mod authorize;
pub mod delegate;
pub mod sweeper;
