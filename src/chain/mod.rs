//! Reading chains: the JSON-RPC client and the watcher that detects and confirms payments.

pub mod denylist;
pub mod rpc;
pub mod watcher;
