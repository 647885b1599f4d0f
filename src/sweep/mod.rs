//! Collecting the money: deposit addresses delegate (EIP-7702) to a contract that can only
//! send their balances to the merchant's treasury; a gas tank pays for batched sweeps.
//!
//! - [`delegate`]: the `SweepDelegate` contract, its deterministic address, its calls;
//! - [`authorize`]: offline signing of the authorizations from the merchant's mnemonic;
//! - [`sweeper`]: the worker that plans, sends and records the sweeps;
//! - [`tron`]: TRON transactions (protobuf), built and signed offline.

pub mod authorize;
pub mod delegate;
pub mod sweeper;
pub mod tron;

use crate::domain::api_key::Mode;
use crate::domain::network::Network;
use rust_decimal::Decimal;

/// The last gas-tank balance each sweeper read (for readiness).
#[derive(Default)]
pub struct GasTanks(dashmap::DashMap<(Network, Mode), GasTankReading>);

#[derive(Debug, Clone)]
pub struct GasTankReading {
    pub address: String,
    pub balance: Decimal,
    pub low_gas_balance: Decimal,
}

impl GasTanks {
    pub fn record(&self, network: Network, mode: Mode, reading: GasTankReading) {
        self.0.insert((network, mode), reading);
    }

    /// `NETWORK/mode` → its reading, in a stable order.
    pub fn readings(&self) -> Vec<(String, GasTankReading)> {
        let mut out: Vec<_> = self
            .0
            .iter()
            .map(|e| {
                (
                    format!("{}/{}", e.key().0, e.key().1.as_str()),
                    e.value().clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
