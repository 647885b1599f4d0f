use super::{PageRequest, Scope};
use crate::domain::sub_merchant::SubMerchantStatus;
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone)]
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
    scope: Scope,
    code: &str,
    display_name: &str,
    logo_url: Option<&str>,
) -> sqlx::Result<SubMerchant> {
    sqlx::query_as!(
        SubMerchant,
        r#"INSERT INTO sub_merchants (merchant_id, livemode, code, display_name, logo_url)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING merchant_id, livemode, code, display_name, logo_url, status AS "status: _", created_at,
                    updated_at"#,
        scope.merchant_id,
        scope.livemode,
        code,
        display_name,
        logo_url,
    )
    .fetch_one(db)
    .await
}

pub async fn find(db: &PgPool, scope: Scope, code: &str) -> sqlx::Result<Option<SubMerchant>> {
    sqlx::query_as!(
        SubMerchant,
        r#"SELECT merchant_id, livemode, code, display_name, logo_url, status AS "status: _", created_at,
                    updated_at
             FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2 AND code = $3"#,
        scope.merchant_id,
        scope.livemode,
        code,
    )
    .fetch_optional(db)
    .await
}

/// One page, oldest first, and the total count.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    rows: PageRequest,
) -> sqlx::Result<(Vec<SubMerchant>, i64)> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2"#,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as!(
        SubMerchant,
        r#"SELECT merchant_id, livemode, code, display_name, logo_url, status AS "status: _", created_at,
                    updated_at
             FROM sub_merchants WHERE merchant_id = $1 AND livemode = $2
            ORDER BY created_at, code LIMIT $3 OFFSET $4"#,
        scope.merchant_id,
        scope.livemode,
        rows.limit,
        rows.offset,
    )
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
    scope: Scope,
    code: &str,
    patch: &SubMerchantPatch<'_>,
) -> sqlx::Result<Option<SubMerchant>> {
    sqlx::query_as!(
        SubMerchant,
        r#"UPDATE sub_merchants SET
              display_name = COALESCE($4, display_name),
              logo_url = CASE WHEN $5 THEN $6 ELSE logo_url END,
              status = COALESCE($7, status),
              updated_at = now()
            WHERE merchant_id = $1 AND livemode = $2 AND code = $3
           RETURNING merchant_id, livemode, code, display_name, logo_url, status AS "status: _", created_at,
                    updated_at"#,
        scope.merchant_id,
        scope.livemode,
        code,
        patch.display_name,
        patch.logo_url.is_some(),
        patch.logo_url.flatten(),
        patch.status as Option<SubMerchantStatus>,
    )
    .fetch_optional(db)
    .await
}
