use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{FromRow, PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::idempotency::Claim;
use crate::domain::money::{PricingCurrency, Token};
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::{SessionStatus, TransactionStatus};

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub sub_merchant_code: Option<String>,
    pub status: SessionStatus,
    pub amount: Decimal,
    pub amount_received: Decimal,
    pub fee_rate: Decimal,
    pub fee_floor: Decimal,
    pub fee_amount: Decimal,
    pub net_amount: Decimal,
    pub currency: Token,
    pub network: Network,
    pub chain_family: ChainFamily,
    pub currency_contract: String,
    pub token_decimals: i16,
    pub detection_rpc_url: Option<String>,
    pub pay_address: String,
    pub address_xpub: String,
    pub address_index: i64,
    pub pricing_amount: Decimal,
    pub pricing_currency: PricingCurrency,
    pub exchange_rate: Decimal,
    pub client_reference_id: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub merchant_name: String,
    pub merchant_logo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub dust_count: i32,
    pub unexpected_count: i32,
}

#[derive(Debug, Clone, FromRow)]
pub struct TransactionRow {
    pub session_id: String,
    pub tx_hash: String,
    pub amount: Decimal,
    pub network: Network,
    pub status: TransactionStatus,
    pub created_at: DateTime<Utc>,
    pub credited: bool,
    pub late: bool,
    pub blocked: bool,
}

/// The columns of a [`TransactionRow`].
pub const TRANSACTION_COLUMNS: &str =
    "session_id, tx_hash, amount, network, status, created_at, credited, late, blocked";
/// The transactions a session lists: transfers of its own token (another token's are
/// counted in `anomalies.unexpected` instead).
pub const LISTED: &str = "NOT unexpected";

/// Everything a new session row needs; the caller has validated it all.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub sub_merchant_code: Option<String>,
    pub amount: Decimal,
    pub fee_rate: Decimal,
    pub fee_floor: Decimal,
    pub fee_amount: Decimal,
    pub net_amount: Decimal,
    pub currency: Token,
    pub network: Network,
    pub chain_family: ChainFamily,
    pub currency_contract: String,
    pub token_decimals: i16,
    pub detection_rpc_url: Option<String>,
    pub pay_address: String,
    pub address_xpub: String,
    pub address_index: i64,
    pub pricing_amount: Decimal,
    pub pricing_currency: PricingCurrency,
    pub exchange_rate: Decimal,
    pub client_reference_id: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub merchant_name: String,
    pub merchant_logo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewSession {
    /// The row this insert will produce.
    pub fn to_row(&self) -> SessionRow {
        SessionRow {
            id: self.id.clone(),
            merchant_id: self.merchant_id,
            livemode: self.livemode,
            sub_merchant_code: self.sub_merchant_code.clone(),
            status: SessionStatus::Pending,
            amount: self.amount,
            amount_received: Decimal::ZERO,
            fee_rate: self.fee_rate,
            fee_floor: self.fee_floor,
            fee_amount: self.fee_amount,
            net_amount: self.net_amount,
            currency: self.currency,
            network: self.network,
            chain_family: self.chain_family,
            currency_contract: self.currency_contract.clone(),
            token_decimals: self.token_decimals,
            detection_rpc_url: self.detection_rpc_url.clone(),
            pay_address: self.pay_address.clone(),
            address_xpub: self.address_xpub.clone(),
            address_index: self.address_index,
            pricing_amount: self.pricing_amount,
            pricing_currency: self.pricing_currency,
            exchange_rate: self.exchange_rate,
            client_reference_id: self.client_reference_id.clone(),
            success_url: self.success_url.clone(),
            cancel_url: self.cancel_url.clone(),
            merchant_name: self.merchant_name.clone(),
            merchant_logo_url: self.merchant_logo_url.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            paid_at: None,
            updated_at: self.created_at,
            dust_count: 0,
            unexpected_count: 0,
        }
    }
}

/// Hands out the next child index of a key, by its key id (`AccountXpub::key_id`, the same
/// for every encoding of the key). The row lock held until commit serializes concurrent
/// creates on one key, so an index is never handed out twice.
pub async fn allocate_address_index(
    db: impl PgExecutor<'_>,
    family: ChainFamily,
    key_id: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO address_allocators (chain_family, key_id, next_index) VALUES ($1, $2, 1)
         ON CONFLICT (chain_family, key_id) DO UPDATE SET next_index = address_allocators.next_index + 1
         RETURNING next_index - 1",
    )
    .bind(family)
    .bind(key_id)
    .fetch_one(db)
    .await
}

/// Inserts the session. With an idempotency claim, the same statement stores the key's
/// response, so the session and its key can never diverge; `None` means the claim was lost.
pub async fn insert(
    db: impl PgExecutor<'_>,
    s: &NewSession,
    claim: Option<(&Claim, &[u8])>,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "WITH claim AS (
            UPDATE idempotency_keys
            SET state = 'done', response_status = 201, response_body = $31, owner = NULL, locked_at = NULL
            WHERE $30::uuid IS NOT NULL AND merchant_id = $2 AND livemode = $3 AND key = $29 AND owner = $30
            RETURNING 1
         )
         INSERT INTO checkout_sessions (
            id, merchant_id, livemode, sub_merchant_code, amount, fee_rate, fee_floor, fee_amount,
            net_amount, currency, network, chain_family, currency_contract, token_decimals,
            detection_rpc_url, pay_address, address_xpub, address_index, pricing_amount,
            pricing_currency, exchange_rate, client_reference_id, success_url, cancel_url,
            merchant_name, merchant_logo_url, created_at, expires_at, updated_at, idempotency_key)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $27, $29
         WHERE $30::uuid IS NULL OR EXISTS (SELECT 1 FROM claim)
         RETURNING *",
    )
    .bind(&s.id)
    .bind(s.merchant_id)
    .bind(s.livemode)
    .bind(&s.sub_merchant_code)
    .bind(s.amount)
    .bind(s.fee_rate)
    .bind(s.fee_floor)
    .bind(s.fee_amount)
    .bind(s.net_amount)
    .bind(s.currency)
    .bind(s.network)
    .bind(s.chain_family)
    .bind(&s.currency_contract)
    .bind(s.token_decimals)
    .bind(&s.detection_rpc_url)
    .bind(&s.pay_address)
    .bind(&s.address_xpub)
    .bind(s.address_index)
    .bind(s.pricing_amount)
    .bind(s.pricing_currency)
    .bind(s.exchange_rate)
    .bind(&s.client_reference_id)
    .bind(&s.success_url)
    .bind(&s.cancel_url)
    .bind(&s.merchant_name)
    .bind(&s.merchant_logo_url)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(claim.map(|(c, _)| c.key.as_str()))
    .bind(claim.map(|(c, _)| c.owner))
    .bind(claim.map(|(_, body)| body))
    .fetch_optional(db)
    .await
}

/// A session owned by this merchant in this mode.
pub async fn find(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    livemode: bool,
    id: &str,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "SELECT * FROM checkout_sessions WHERE id = $1 AND merchant_id = $2 AND livemode = $3",
    )
    .bind(id)
    .bind(merchant_id)
    .bind(livemode)
    .fetch_optional(db)
    .await
}

/// A session by id alone, for its public page.
pub async fn find_public(db: &PgPool, id: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as("SELECT * FROM checkout_sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A transfer as the public page shows it.
#[derive(Debug, Clone, FromRow)]
pub struct PageTransfer {
    pub tx_hash: String,
    pub amount: Decimal,
    pub status: TransactionStatus,
    pub block_number: Option<i64>,
    pub block_time: Option<DateTime<Utc>>,
}

/// The newest 20 listed transfers, oldest first: the page needs the latest payment's
/// progress, and a flood of transfers to one address must not make every poll heavier.
pub async fn newest_transfers(db: &PgPool, session_id: &str) -> sqlx::Result<Vec<PageTransfer>> {
    sqlx::query_as(
        "SELECT tx_hash, amount, status, block_number, block_time FROM (
            SELECT id, created_at, tx_hash, amount, status, block_number, block_time
              FROM transactions
             WHERE session_id = $1 AND NOT unexpected
             ORDER BY created_at DESC, id DESC LIMIT 20) newest
          ORDER BY created_at, id",
    )
    .bind(session_id)
    .fetch_all(db)
    .await
}

/// The logo URL the session shows, if the session exists and has one.
pub async fn logo_url(db: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT merchant_logo_url FROM checkout_sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

/// Transactions of the given sessions, oldest first.
pub async fn transactions_of(
    db: &PgPool,
    session_ids: &[String],
) -> sqlx::Result<Vec<TransactionRow>> {
    if session_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions
          WHERE session_id = ANY($1) AND {LISTED} ORDER BY created_at, id"
    ))
    .bind(session_ids)
    .fetch_all(db)
    .await
}

#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    pub network: Option<Network>,
    pub client_reference_id: Option<String>,
    pub sub_merchant_code: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

fn push_filter(
    q: &mut QueryBuilder<'_, Postgres>,
    merchant_id: Uuid,
    livemode: bool,
    f: &SessionFilter,
) {
    q.push(" WHERE merchant_id = ").push_bind(merchant_id);
    q.push(" AND livemode = ").push_bind(livemode);
    if let Some(v) = f.status {
        q.push(" AND status = ").push_bind(v);
    }
    if let Some(v) = f.network {
        q.push(" AND network = ").push_bind(v);
    }
    if let Some(v) = &f.client_reference_id {
        q.push(" AND client_reference_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.sub_merchant_code {
        q.push(" AND sub_merchant_code = ").push_bind(v.clone());
    }
    if let Some(v) = f.created_after {
        q.push(" AND created_at > ").push_bind(v);
    }
    if let Some(v) = f.created_before {
        q.push(" AND created_at < ").push_bind(v);
    }
}

/// One page, newest first, and the total matching count.
pub async fn list(
    db: &PgPool,
    merchant_id: Uuid,
    livemode: bool,
    filter: &SessionFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<SessionRow>, i64)> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM checkout_sessions");
    push_filter(&mut count, merchant_id, livemode, filter);
    let total: i64 = count.build_query_scalar().fetch_one(db).await?;

    let mut page = QueryBuilder::new("SELECT * FROM checkout_sessions");
    push_filter(&mut page, merchant_id, livemode, filter);
    page.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows = page.build_query_as().fetch_all(db).await?;
    Ok((rows, total))
}

/// Expires an open (Pending or Underpaid) session; `None` when it is not open or not found.
pub async fn expire_open(
    db: impl PgExecutor<'_>,
    merchant_id: Uuid,
    livemode: bool,
    id: &str,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(
        "UPDATE checkout_sessions SET status = 'Expired', updated_at = now()
         WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND status IN ('Pending', 'Underpaid')
         RETURNING *",
    )
    .bind(id)
    .bind(merchant_id)
    .bind(livemode)
    .fetch_optional(db)
    .await
}
