//! Sweeps as merchants see them, and the import of offline-signed authorizations.

use crate::db::sweeps::{self as db, AuthorizationRow};
use crate::domain::address::AccountXpub;
use crate::domain::ids::is_random_id;
use crate::domain::network::ChainFamily;
use crate::service::{Caller, Error, Page, PageRequest};
use crate::sweep::authorize::{verify, AuthorizationFile};
use crate::views::sweep_json;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// The xpub a merchant's addresses of `family` come from: its own, else the server's.
async fn merchant_xpub(
    pool: &PgPool,
    merchant_id: Uuid,
    family: ChainFamily,
    server_default: Option<&AccountXpub>,
) -> anyhow::Result<AccountXpub> {
    let merchant = crate::db::merchants::find(pool, merchant_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no merchant {merchant_id}"))?;
    let name = family.as_str().to_uppercase();
    match merchant.xpub(family) {
        Some(text) => {
            AccountXpub::parse(text).map_err(|m| anyhow::anyhow!("the merchant's {name} xpub {m}"))
        }
        None => server_default.cloned().ok_or_else(|| {
            let article = if family == ChainFamily::Evm {
                "an"
            } else {
                "a"
            };
            anyhow::anyhow!("neither the merchant nor the server has {article} {name} xpub")
        }),
    }
}

/// Stores a file of `sweep authorize`, after checking every signature against the EVM xpub
/// the merchant's addresses come from (its own, else the server's `server_default`); returns
/// how many authorizations were stored.
pub async fn import_authorizations(
    pool: &PgPool,
    merchant_id: Uuid,
    server_default: Option<&AccountXpub>,
    file: &AuthorizationFile,
) -> anyhow::Result<u64> {
    let xpub = merchant_xpub(pool, merchant_id, ChainFamily::Evm, server_default).await?;
    verify(file, &xpub)?;
    let entries: Vec<AuthorizationRow> = file
        .authorizations
        .iter()
        .map(|e| AuthorizationRow {
            address: e.address.to_checksum(None),
            address_index: i64::from(e.index),
            nonce: i64::try_from(e.nonce).unwrap_or(i64::MAX),
            y_parity: i16::from(e.y_parity),
            r: e.r.to_be_bytes::<32>().to_vec(),
            s: e.s.to_be_bytes::<32>().to_vec(),
        })
        .collect();
    let chain_id = i64::try_from(file.chain_id)?;
    let delegate = file.delegate.to_checksum(None);
    Ok(db::import_authorizations(pool, merchant_id, chain_id, &delegate, &entries).await?)
}

/// One page of the merchant's sweeps (newest first), each with its items.
pub async fn list(caller: &Caller, rows: PageRequest) -> Result<Page<Value>, Error> {
    let pool = &caller.state.db;
    let (sweeps, total) = db::list(pool, caller.scope(), rows).await?;
    let ids: Vec<String> = sweeps.iter().map(|s| s.id.clone()).collect();
    let items = db::items(pool, &ids).await?;
    let steps = db::steps(pool, &ids).await?;
    let items = sweeps
        .iter()
        .map(|s| {
            sweep_json(
                s,
                items.iter().filter(|(id, _)| *id == s.id).map(|(_, i)| i),
                steps.iter().filter(|(id, _)| *id == s.id).map(|(_, t)| t),
            )
        })
        .collect();
    Ok(Page { items, total })
}

/// The merchant's sweep `id`; a malformed id is as missing as an unknown one.
pub async fn find(caller: &Caller, id: &str) -> Result<Value, Error> {
    let missing = || Error::NotFound(format!("no sweep '{id}'"));
    if !is_random_id("sw_", id) {
        return Err(missing());
    }
    let pool = &caller.state.db;
    let row = db::find(pool, caller.scope(), id)
        .await?
        .ok_or_else(missing)?;
    let items = db::items(pool, std::slice::from_ref(&row.id)).await?;
    let steps = db::steps(pool, std::slice::from_ref(&row.id)).await?;
    Ok(sweep_json(
        &row,
        items.iter().map(|(_, i)| i),
        steps.iter().map(|(_, t)| t),
    ))
}

/// `sweep plan` for a `[sweep.TRON.mode]` table: reads the chain and the node's API and
/// returns the plan (addresses below the minimum are marked checked).
pub async fn tron_plan(
    pool: &PgPool,
    config: &crate::config::Config,
    sweep: &crate::config::TronSweepConfig,
) -> anyhow::Result<crate::sweep::tron::plan::Plan> {
    let xpub = merchant_xpub(
        pool,
        sweep.merchant,
        ChainFamily::Tron,
        config.wallets.tron.as_ref(),
    )
    .await?;
    let net = config.network(sweep.network, sweep.mode);
    let policy = crate::chain::rpc::RetryPolicy::default();
    let rpc = crate::chain::watcher::rpc_client(net, policy.clone())?;
    let api = crate::sweep::tron::api::TronApi::new(&sweep.http_urls, policy.timeout)?;
    let planner = crate::sweep::tron::plan::Planner {
        db: pool,
        config: sweep,
        net,
        rpc: &rpc,
        api: &api,
        xpub: &xpub,
    };
    Ok(planner.plan().await?)
}
