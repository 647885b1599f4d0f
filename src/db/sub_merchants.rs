use crate::domain::sub_merchant::SubMerchantStatus;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct SubMerchant {
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub code: String,
    pub display_name: String,
    pub logo_url: Option<String>,
    pub status: SubMerchantStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const PK: &str = "sub_merchants_pkey";

pub async fn insert(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    livemode: bool,
    code: &str,
    display_name: &str,
    logo_url: Option<&str>,
) -> sqlx::Result<SubMerchant> {
    sqlx::query_as(
        "INSERT INTO sub_merchants (merchant_id, livemode, code, display_name, logo_url)
         VALUES ($1, $2, $3, $4, $5) RETURNING *",
    )
    .bind(merchant_id)
    .bind(livemode)
    .bind(code)
    .bind(display_name)
    .bind(logo_url)
    .fetch_one(db)
    .await
}

pub async fn find(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    livemode: bool,
    code: &str,
) -> sqlx::Result<Option<SubMerchant>> {
    sqlx::query_as(
        "SELECT * FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2 AND code = $3",
    )
    .bind(merchant_id)
    .bind(livemode)
    .bind(code)
    .fetch_optional(db)
    .await
}

/// One page, oldest first, and the total count.
pub async fn list(
    db: &sqlx::PgPool,
    merchant_id: Uuid,
    livemode: bool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<SubMerchant>, i64)> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2",
    )
    .bind(merchant_id)
    .bind(livemode)
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as(
        "SELECT * FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2
         ORDER BY created_at, code LIMIT $3 OFFSET $4",
    )
    .bind(merchant_id)
    .bind(livemode)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

pub struct SubMerchantPatch<'a> {
    pub display_name: Option<&'a str>,
    pub logo_url: Option<Option<&'a str>>,
    pub status: Option<SubMerchantStatus>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    livemode: bool,
    code: &str,
    patch: &SubMerchantPatch<'_>,
) -> sqlx::Result<Option<SubMerchant>> {
    sqlx::query_as(
        "UPDATE sub_merchants SET
            display_name = COALESCE($4, display_name),
            logo_url = CASE WHEN $5 THEN $6 ELSE logo_url END,
            status = COALESCE($7, status),
            updated_at = now()
         WHERE merchant_id = $1 AND livemode = $2 AND code = $3
         RETURNING *",
    )
    .bind(merchant_id)
    .bind(livemode)
    .bind(code)
    .bind(patch.display_name)
    .bind(patch.logo_url.is_some())
    .bind(patch.logo_url.flatten())
    .bind(patch.status)
    .fetch_optional(db)
    .await
}
