//! The API's JSON objects, shared by responses, stored idempotent replies and webhook events.

use crate::db::sessions::{SessionRow, TransactionRow};
use crate::domain::credit::not_credited_reason;
use crate::domain::money::{format_amount, format_rate};
use crate::domain::session::TransactionStatus;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// RFC 3339, UTC, whole seconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The session object of the API; `txs` are the session's own listed transactions.
pub fn session_json(row: &SessionRow, txs: &[TransactionRow], base_url: &str) -> Value {
    let transactions: Vec<Value> = txs
        .iter()
        .map(|t| {
            json!({
                "tx_hash": t.tx_hash,
                "amount": format_amount(t.amount),
                "network": t.network,
                "status": t.status,
                "created_at": timestamp(t.created_at),
                "credited": t.credited,
                "not_credited_reason": not_credited_reason(t.credited, t.late, t.blocked)
                    .filter(|_| t.status == TransactionStatus::Confirmed),
            })
        })
        .collect();
    json!({
        "id": row.id,
        "livemode": row.livemode,
        "status": row.status,
        "amount": format_amount(row.amount),
        "amount_received": format_amount(row.amount_received),
        "fee_amount": format_amount(row.fee_amount),
        "net_amount": format_amount(row.net_amount),
        "currency": row.currency,
        "network": row.network,
        "chain_family": row.chain_family,
        "currency_contract": row.currency_contract,
        "detection_rpc_url": row.detection_rpc_url,
        "pay_address": row.pay_address,
        "pricing": {
            "amount": row.pricing_amount.to_string(),
            "currency": row.pricing_currency,
            "exchange_rate": format_rate(row.exchange_rate),
        },
        "client_reference_id": row.client_reference_id,
        "success_url": row.success_url,
        "cancel_url": row.cancel_url,
        "sub_merchant_code": row.sub_merchant_code,
        "merchant_name": row.merchant_name,
        "merchant_logo_url": row.merchant_logo_url,
        "url": format!("{base_url}/{}", row.id),
        "created_at": timestamp(row.created_at),
        "expires_at": timestamp(row.expires_at),
        "transactions": transactions,
        "anomalies": {
            "dust": row.dust_count,
            "unexpected": row.unexpected_count,
        },
    })
}

/// The event envelope: the webhook body, and the events API's object.
pub fn event_json(e: &crate::db::events::EventRow) -> Value {
    json!({
        "id": e.id,
        "event_type": e.event_type,
        "created": e.created_at.timestamp(),
        "livemode": e.livemode,
        "data": e.data,
    })
}

/// The sweep object of the API: the transaction, and what each address sent the treasury.
pub fn sweep_json<'a>(
    row: &crate::db::sweeps::SweepRow,
    items: impl IntoIterator<Item = &'a crate::db::sweeps::ItemRow>,
    steps: impl IntoIterator<Item = &'a crate::db::sweeps::StepRow>,
) -> Value {
    let steps: Vec<&crate::db::sweeps::StepRow> = steps.into_iter().collect();
    let mut totals: std::collections::BTreeMap<&str, rust_decimal::Decimal> = Default::default();
    let items: Vec<Value> = items
        .into_iter()
        .map(|i| {
            if let Some(swept) = i.swept {
                *totals.entry(i.currency.as_str()).or_default() += swept;
            }
            // EVM: the sweep's one transaction; TRON: the address's own transfer.
            let tx_hash = row.tx_hash.clone().or_else(|| {
                steps
                    .iter()
                    .find(|s| s.kind == "transfer" && s.address == i.address)
                    .map(|s| s.tx_id.clone())
            });
            json!({
                "address": i.address,
                "address_index": i.address_index,
                "currency": i.currency,
                "contract": i.contract,
                "expected_amount": format_amount(i.expected),
                "swept_amount": i.swept.map(format_amount),
                "authorized": i.authorized,
                "tx_hash": tx_hash,
            })
        })
        .collect();
    let totals: serde_json::Map<String, Value> = totals
        .into_iter()
        .map(|(currency, amount)| (currency.to_owned(), json!(format_amount(amount))))
        .collect();
    let transactions: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "kind": s.kind,
                "address": s.address,
                "tx_hash": s.tx_id,
                "status": s.status,
                "error": s.error,
                "block_number": s.block_number,
                "energy_used": s.energy_used,
                "fee_sun": s.fee.map(|f| f.normalize().to_string()),
            })
        })
        .collect();
    json!({
        "id": row.id,
        "object": "sweep",
        "livemode": row.livemode,
        "network": row.network,
        "status": row.status,
        "treasury": row.treasury,
        "delegate": row.delegate,
        "gas_tank": row.gas_tank,
        "tx_hash": row.tx_hash,
        "block_number": row.block_number,
        "authorizations": row.authorizations,
        "energy_mode": row.energy_mode,
        "gas_used": row.gas_used,
        "fee_wei": row.fee.map(|f| f.normalize().to_string()),
        "totals": totals,
        "items": items,
        "transactions": transactions,
        "created_at": timestamp(row.created_at),
        "finished_at": row.finished_at.map(timestamp),
    })
}
