//! Reading chains: the JSON-RPC client (the watcher that uses it is being built).

pub mod rpc;
