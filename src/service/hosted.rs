//! What the hosted payment page shows: the public view of a session. Only what a customer
//! needs; no merchant ids, fees, keys or xpubs.

use crate::db::sessions::{self as db, PageTransfer, SessionRow};
use crate::domain::api_key::Mode;
use crate::domain::ids::{ClientReferenceId, SessionId};
use crate::domain::money::{format_amount, Token};
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::{SessionStatus, TransactionStatus};
use crate::service::logos::Logo;
use crate::service::Error;
use crate::state::AppState;
use crate::views::timestamp;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Transfer {
    pub tx_hash: String,
    pub amount: String,
    pub status: TransactionStatus,
    /// Confirmations so far, while unconfirmed (None when unknown).
    pub confirmations: Option<u64>,
    /// Mined after `expires_at`: it will not be credited.
    pub late: bool,
}

#[derive(Debug, Clone)]
pub struct PageView {
    pub id: String,
    pub livemode: bool,
    pub status: SessionStatus,
    pub amount: String,
    pub amount_received: String,
    /// What is still missing (0 once paid).
    pub amount_due: String,
    pub currency: Token,
    pub network: Network,
    pub pay_address: String,
    pub currency_contract: String,
    /// The URI a wallet opens: EIP-681 with the amount on EVM networks, the address on TRON.
    pub payment_uri: String,
    pub uri_has_amount: bool,
    pub merchant_name: String,
    pub merchant_logo_url: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub client_reference_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub server_time: DateTime<Utc>,
    /// `expires_at` has passed: the page no longer shows where to pay, even while the
    /// session waits for the chain to be read up to that moment.
    pub time_up: bool,
    pub confirmations_required: u32,
    pub transfers: Vec<Transfer>,
}

/// The network as customers know it.
pub fn network_label(network: Network) -> &'static str {
    match network {
        Network::Tron => "TRON (TRC20)",
        Network::Bsc => "BNB Smart Chain (BEP20)",
        Network::Ethereum => "Ethereum (ERC20)",
        Network::Polygon => "Polygon (PoS)",
        Network::Arbitrum => "Arbitrum One",
        Network::Optimism => "OP Mainnet (Optimism)",
        Network::Base => "Base",
        Network::Solana => "Solana (SPL)",
    }
}

/// `amount` in base units of a token with `decimals`, for EIP-681's `uint256`.
pub fn base_units(amount: Decimal, decimals: u32) -> Option<String> {
    let scaled = amount.checked_mul(Decimal::from_i128_with_scale(
        10i128.checked_pow(decimals.min(28))?,
        0,
    ))?;
    (scaled.fract().is_zero() && scaled >= Decimal::ZERO).then(|| scaled.trunc().to_string())
}

/// The logo of session `id`'s merchant, fetched from its URL (on a public address unless
/// private webhook targets are allowed) and cached.
pub async fn logo(state: &AppState, id: &SessionId) -> Result<Option<Logo>, Error> {
    let Some(url) = db::logo_url(&state.db, id.as_str()).await? else {
        return Ok(None);
    };
    let public_only = !state.config.webhooks.allow_private_targets;
    Ok(state.logos.get(&url, public_only).await)
}

impl PageView {
    pub async fn load(state: &AppState, id: &str) -> Result<Option<Self>, Error> {
        let Some(row) = db::by_id(&state.db, id).await? else {
            return Ok(None);
        };
        let transfers = db::newest_transfers(&state.db, id).await?;
        let head = crate::db::chain::head_number(&state.db, row.network, row.livemode).await?;
        Ok(Some(Self::build(state, row, transfers, head)))
    }

    fn build(
        state: &AppState,
        row: SessionRow,
        transfers: Vec<PageTransfer>,
        head: Option<i64>,
    ) -> Self {
        let network = row.network;
        let mode = if row.livemode { Mode::Live } else { Mode::Test };
        let net = state.config.network(network, mode);
        let now = Utc::now();
        let due = (row.amount - row.amount_received).max(Decimal::ZERO);
        let decimals = u32::try_from(row.token_decimals).unwrap_or(0);
        // A simulated test network has no chain: a link with an amount could only send real
        // funds on the network whose defaults it borrows.
        let chain_id = net.chain_id.filter(|_| !net.simulated);
        let evm_uri = chain_id
            .zip(base_units(due, decimals))
            .map(|(chain, units)| {
                format!(
                    "ethereum:{}@{chain}/transfer?address={}&uint256={units}",
                    row.currency_contract, row.pay_address
                )
            });
        let (payment_uri, uri_has_amount) = match (network.family(), evm_uri) {
            (ChainFamily::Evm, Some(uri)) => (uri, true),
            _ => (row.pay_address.clone(), false),
        };
        Self {
            transfers: transfers
                .into_iter()
                .map(|t| Transfer {
                    confirmations: match (t.status, t.block_number, head) {
                        (TransactionStatus::Unconfirmed, Some(b), Some(h)) if h >= b => {
                            u64::try_from(h - b + 1).ok()
                        }
                        _ => None,
                    },
                    late: t.block_time.is_some_and(|b| b > row.expires_at),
                    tx_hash: t.tx_hash,
                    amount: format_amount(t.amount),
                    status: t.status,
                })
                .collect(),
            id: row.id.as_str().to_owned(),
            livemode: row.livemode,
            status: row.status,
            amount: format_amount(row.amount),
            amount_received: format_amount(row.amount_received),
            amount_due: format_amount(due),
            currency: row.currency,
            network,
            pay_address: row.pay_address,
            currency_contract: row.currency_contract,
            payment_uri,
            uri_has_amount,
            merchant_name: row.merchant_name,
            merchant_logo_url: row.merchant_logo_url,
            success_url: row.success_url,
            cancel_url: row.cancel_url,
            client_reference_id: row.client_reference_id.map(ClientReferenceId::into_string),
            expires_at: row.expires_at,
            time_up: now >= row.expires_at,
            server_time: now,
            confirmations_required: net.confirmations.max(1),
        }
    }

    /// A payment made in time is seen but not yet confirmed.
    pub fn confirming(&self) -> Option<&Transfer> {
        self.transfers
            .iter()
            .find(|t| t.status == TransactionStatus::Unconfirmed && !t.late)
    }

    /// The public JSON the page polls and streams.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "livemode": self.livemode,
            "status": self.status.as_str(),
            "amount": self.amount,
            "amount_received": self.amount_received,
            "amount_due": self.amount_due,
            "currency": self.currency,
            "network": self.network.as_str(),
            "network_label": network_label(self.network),
            "pay_address": self.pay_address,
            "currency_contract": self.currency_contract,
            "payment_uri": self.payment_uri,
            "merchant_name": self.merchant_name,
            "merchant_logo_url": self.merchant_logo_url,
            "success_url": self.success_url,
            "cancel_url": self.cancel_url,
            "expires_at": timestamp(self.expires_at),
            "server_time": timestamp(self.server_time),
            "time_up": self.time_up,
            "confirmations_required": self.confirmations_required,
            "transactions": self.transfers.iter().map(|t| json!({
                "tx_hash": t.tx_hash,
                "amount": t.amount,
                "status": t.status,
                "confirmations": t.confirmations,
                "late": t.late,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_units_are_exact() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(base_units(d("10.5"), 6).as_deref(), Some("10500000"));
        assert_eq!(
            base_units(d("10.5"), 18).as_deref(),
            Some("10500000000000000000")
        );
        assert_eq!(base_units(d("0.0000001"), 6), None, "not representable");
    }
}
