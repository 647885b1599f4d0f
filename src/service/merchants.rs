//! Merchants and their API keys (used by the CLI and the demo).

use crate::db::merchants::{self as db, Merchant, NewMerchant};
use crate::domain::address::{AccountXpub, PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB};
use crate::domain::api_key::{ApiKey, Mode};
use crate::domain::money::parse_plain_decimal;
use crate::domain::urls::HttpUrl;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

pub struct MerchantSpec {
    pub name: String,
    pub logo_url: Option<String>,
    pub tron_xpub: Option<String>,
    pub evm_xpub: Option<String>,
    pub fee_rate: Option<String>,
}

pub struct CreatedMerchant {
    pub merchant: Merchant,
    pub test_key: ApiKey,
    pub live_key: Option<ApiKey>,
}

/// Checks a merchant spec; the error names the option at fault.
fn validate(
    spec: &MerchantSpec,
) -> anyhow::Result<(Option<Decimal>, Option<String>, Option<String>)> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        anyhow::bail!("--name: must be 1 to 200 characters");
    }
    if let Some(url) = &spec.logo_url {
        HttpUrl::parse(url).map_err(|m| anyhow::anyhow!("--logo-url: {m}"))?;
    }
    let xpub = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<String>> {
        v.as_deref()
            .map(|s| {
                AccountXpub::parse(s)
                    .map(|x| x.as_str().to_owned())
                    .map_err(|m| anyhow::anyhow!("{flag}: {m}"))
            })
            .transpose()
    };
    let tron = xpub("--tron-xpub", &spec.tron_xpub)?;
    let evm = xpub("--evm-xpub", &spec.evm_xpub)?;
    let fee_rate = spec
        .fee_rate
        .as_deref()
        .map(|r| {
            let rate = parse_plain_decimal(r).map_err(|m| anyhow::anyhow!("--fee-rate: {m}"))?;
            if rate >= Decimal::ONE || rate.scale() > 6 {
                anyhow::bail!(
                    "--fee-rate: must be below 1 with at most 6 decimals (0.005 = 0.5 %)"
                );
            }
            Ok(rate)
        })
        .transpose()?;
    Ok((fee_rate, tron, evm))
}

pub async fn create(db: &PgPool, spec: &MerchantSpec) -> anyhow::Result<CreatedMerchant> {
    let (fee_rate, tron, evm) = validate(spec)?;
    let mut tx = db.begin().await?;
    let merchant = db::insert(
        &mut *tx,
        &NewMerchant {
            name: spec.name.trim(),
            logo_url: spec.logo_url.as_deref(),
            tron_xpub: tron.as_deref(),
            evm_xpub: evm.as_deref(),
            fee_rate,
            is_demo: false,
        },
    )
    .await?;
    let test_key = ApiKey::generate(Mode::Test);
    let live_key = ApiKey::generate(Mode::Live);
    db::insert_key(&mut *tx, merchant.id, &test_key).await?;
    db::insert_key(&mut *tx, merchant.id, &live_key).await?;
    tx.commit().await?;
    Ok(CreatedMerchant {
        merchant,
        test_key,
        live_key: Some(live_key),
    })
}

pub async fn create_key(db: &PgPool, merchant_id: Uuid, mode: Mode) -> anyhow::Result<ApiKey> {
    if db::find(db, merchant_id).await?.is_none() {
        anyhow::bail!("--merchant: no merchant with id {merchant_id}");
    }
    let key = ApiKey::generate(mode);
    db::insert_key(db, merchant_id, &key).await?;
    Ok(key)
}

pub async fn revoke_key(db: &PgPool, key: &str) -> anyhow::Result<()> {
    let key = ApiKey::parse(key)
        .ok_or_else(|| anyhow::anyhow!("--key: not an API key (sk_test_… or sk_live_…)"))?;
    if !db::revoke_key(db, &key.hash()).await? {
        anyhow::bail!("--key: no active key matches");
    }
    Ok(())
}

/// The demo merchant (created once, on the public test xpubs) and a test key for it.
/// `known_key` is a key printed by an earlier run; it is reused while it still works.
pub async fn ensure_demo(
    db: &PgPool,
    known_key: Option<&str>,
) -> anyhow::Result<(Merchant, ApiKey)> {
    let merchant = match db::find_demo(db).await? {
        Some(m) => m,
        None => {
            let inserted = db::insert(
                db,
                &NewMerchant {
                    name: "Demo Store",
                    logo_url: None,
                    tron_xpub: Some(PUBLIC_TEST_TRON_XPUB),
                    evm_xpub: Some(PUBLIC_TEST_EVM_XPUB),
                    fee_rate: None,
                    is_demo: true,
                },
            )
            .await;
            match inserted {
                Ok(m) => m,
                // A concurrent start created it first.
                Err(e) if crate::db::is_constraint(&e, "merchants_one_demo") => db::find_demo(db)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("demo merchant vanished"))?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if let Some(key) = known_key.and_then(ApiKey::parse) {
        if let Some(owner) = db::authenticate(db, &key.hash(), key.mode()).await? {
            if owner.id == merchant.id && key.mode() == Mode::Test {
                return Ok((merchant, key));
            }
        }
    }
    let key = ApiKey::generate(Mode::Test);
    db::insert_key(db, merchant.id, &key).await?;
    Ok((merchant, key))
}
