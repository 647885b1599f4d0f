use crate::domain::api_key::{ApiKey, KeyHash, Mode};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: Uuid,
    pub name: String,
    pub logo_url: Option<String>,
    pub tron_xpub: Option<String>,
    pub evm_xpub: Option<String>,
    pub fee_rate: Option<Decimal>,
    pub is_demo: bool,
    pub created_at: DateTime<Utc>,
}

impl Merchant {
    /// The merchant's own account xpub for the chain family, if it has one.
    pub fn xpub(&self, family: crate::domain::network::ChainFamily) -> Option<&str> {
        use crate::domain::network::ChainFamily;
        match family {
            ChainFamily::Tron => self.tron_xpub.as_deref(),
            ChainFamily::Evm => self.evm_xpub.as_deref(),
            ChainFamily::Solana => None,
        }
    }
}

pub struct NewMerchant<'a> {
    pub name: &'a str,
    pub logo_url: Option<&'a str>,
    pub tron_xpub: Option<&'a str>,
    pub evm_xpub: Option<&'a str>,
    pub fee_rate: Option<Decimal>,
    pub is_demo: bool,
}

pub async fn insert(db: impl PgExecutor<'_>, m: &NewMerchant<'_>) -> sqlx::Result<Merchant> {
    sqlx::query_as!(
        Merchant,
        "INSERT INTO merchants (id, name, logo_url, tron_xpub, evm_xpub, fee_rate, is_demo)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, name, logo_url, tron_xpub, evm_xpub, fee_rate, is_demo, created_at",
        Uuid::new_v4(),
        m.name,
        m.logo_url,
        m.tron_xpub,
        m.evm_xpub,
        m.fee_rate,
        m.is_demo,
    )
    .fetch_one(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Merchant>> {
    sqlx::query_as!(
        Merchant,
        "SELECT id, name, logo_url, tron_xpub, evm_xpub, fee_rate, is_demo, created_at
           FROM merchants WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

pub async fn find_demo(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Merchant>> {
    sqlx::query_as!(
        Merchant,
        "SELECT id, name, logo_url, tron_xpub, evm_xpub, fee_rate, is_demo, created_at
           FROM merchants WHERE is_demo"
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_key(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    key: &ApiKey,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO api_keys (id, merchant_id, livemode, key_hash, key_prefix) VALUES ($1, $2, $3, $4, $5)",
        Uuid::new_v4(),
        merchant_id,
        key.mode().livemode(),
        &key.hash()[..],
        key.display_prefix(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a key revoked; false when no such active key exists.
pub async fn revoke_key(db: impl PgExecutor<'_>, hash: &KeyHash) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL",
        &hash[..],
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The merchant behind an active key of the given mode: one indexed lookup.
pub async fn authenticate(
    db: &PgPool,
    hash: &KeyHash,
    mode: Mode,
) -> sqlx::Result<Option<Merchant>> {
    sqlx::query_as!(
        Merchant,
        "SELECT m.id, m.name, m.logo_url, m.tron_xpub, m.evm_xpub, m.fee_rate, m.is_demo,
                m.created_at
           FROM api_keys k JOIN merchants m ON m.id = k.merchant_id
          WHERE k.key_hash = $1 AND k.livemode = $2 AND k.revoked_at IS NULL",
        &hash[..],
        mode.livemode(),
    )
    .fetch_optional(db)
    .await
}
