use super::{PageRequest, Scope};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::idempotency::Claim;
use crate::domain::ids::{ClientReferenceId, SessionId, SubMerchantCode};
use crate::domain::money::{PricingCurrency, Token};
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::{SessionStatus, TransactionStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: SessionId,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub sub_merchant_code: Option<SubMerchantCode>,
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
    pub client_reference_id: Option<ClientReferenceId>,
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

#[derive(Debug, Clone)]
pub struct TransactionRow {
    pub session_id: SessionId,
    pub tx_hash: String,
    pub amount: Decimal,
    pub network: Network,
    pub status: TransactionStatus,
    pub created_at: DateTime<Utc>,
    pub credited: bool,
    pub late: bool,
    pub blocked: bool,
}

/// Reserves the next `count` child indexes of a key, by its key id (`AccountXpub::key_id`, the
/// same for every encoding of the key), and returns the first. The upsert's row lock makes
/// concurrent reservations take disjoint ranges, so an index is never handed out twice.
pub async fn allocate_address_indexes(
    db: impl PgExecutor<'_>,
    family: ChainFamily,
    key_id: &str,
    count: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"INSERT INTO address_allocators (chain_family, key_id, next_index) VALUES ($1, $2, $3)
           ON CONFLICT (chain_family, key_id) DO UPDATE SET next_index = address_allocators.next_index + $3
           RETURNING next_index - $3 AS "first!""#,
        family as ChainFamily,
        key_id,
        count,
    )
    .fetch_one(db)
    .await
}

/// Hands back the unused indexes `start..end` of a key, only if no one reserved after them;
/// true when they were.
pub async fn return_address_indexes(
    db: impl PgExecutor<'_>,
    family: ChainFamily,
    key_id: &str,
    start: i64,
    end: i64,
) -> sqlx::Result<bool> {
    let returned = sqlx::query!(
        "UPDATE address_allocators SET next_index = $3
          WHERE chain_family = $1 AND key_id = $2 AND next_index = $4",
        family as ChainFamily,
        key_id,
        start,
        end,
    )
    .execute(db)
    .await?;
    Ok(returned.rows_affected() == 1)
}

/// Inserts a new session in one statement; false when the idempotency claim was lost. Only the
/// columns a create sets are written: status, amount received and the counters start at the
/// table's defaults. With a claim, the same statement locks the claim (no other request can
/// take the key over meanwhile) and stores `reply` under it as the key's 201 response.
pub async fn insert(
    db: impl PgExecutor<'_>,
    s: &SessionRow,
    claim: Option<&Claim>,
    reply: &[u8],
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"WITH claim AS (
              SELECT 1 FROM idempotency_keys
               WHERE $29::uuid IS NOT NULL AND merchant_id = $2 AND livemode = $3 AND key = $28
                 AND owner = $29
                 FOR UPDATE
           ), created AS (
           INSERT INTO checkout_sessions (
              id, merchant_id, livemode, sub_merchant_code, amount, fee_rate, fee_floor, fee_amount,
              net_amount, currency, network, chain_family, currency_contract, token_decimals,
              detection_rpc_url, pay_address, address_xpub, address_index, pricing_amount,
              pricing_currency, exchange_rate, client_reference_id, success_url, cancel_url,
              merchant_name, merchant_logo_url, created_at, expires_at, updated_at, idempotency_key)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                  $19, $20, $21, $22, $23, $24, $25, $26, $27, $30, $27, $28
           WHERE $29::uuid IS NULL OR EXISTS (SELECT 1 FROM claim)
           RETURNING 1
           ), reply AS (
           UPDATE idempotency_keys
              SET state = 'done', response_status = 201, response_body = $31, owner = NULL, locked_at = NULL
            WHERE $29::uuid IS NOT NULL AND merchant_id = $2 AND livemode = $3 AND key = $28
              AND owner = $29 AND EXISTS (SELECT 1 FROM created)
           )
           SELECT EXISTS (SELECT 1 FROM created) AS "created!""#,
        &s.id as &SessionId,
        s.merchant_id,
        s.livemode,
        s.sub_merchant_code.as_ref() as Option<&SubMerchantCode>,
        s.amount,
        s.fee_rate,
        s.fee_floor,
        s.fee_amount,
        s.net_amount,
        s.currency as Token,
        s.network as Network,
        s.chain_family as ChainFamily,
        s.currency_contract,
        s.token_decimals,
        s.detection_rpc_url,
        s.pay_address,
        s.address_xpub,
        s.address_index,
        s.pricing_amount,
        s.pricing_currency as PricingCurrency,
        s.exchange_rate,
        s.client_reference_id.as_ref() as Option<&ClientReferenceId>,
        s.success_url,
        s.cancel_url,
        s.merchant_name,
        s.merchant_logo_url,
        s.created_at,
        claim.map(|c| c.key.as_str()),
        claim.map(|c| c.owner),
        s.expires_at,
        reply,
    )
    .fetch_one(db)
    .await
}

/// A session by id, whoever owns it (callers check the owner where it matters).
pub async fn by_id(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        r#"SELECT id AS "id: _", merchant_id, livemode, sub_merchant_code AS "sub_merchant_code: _", status AS "status: _", amount,
              amount_received, fee_rate, fee_floor, fee_amount, net_amount, currency AS "currency: _",
              network AS "network: _", chain_family AS "chain_family: _", currency_contract,
              token_decimals, detection_rpc_url, pay_address, address_xpub, address_index,
              pricing_amount, pricing_currency AS "pricing_currency: _", exchange_rate,
              client_reference_id AS "client_reference_id: _", success_url, cancel_url, merchant_name, merchant_logo_url,
              created_at, expires_at, paid_at, updated_at, dust_count, unexpected_count
             FROM checkout_sessions WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// A session owned by this merchant in this mode.
pub async fn find(
    db: impl PgExecutor<'_>,
    scope: Scope,
    id: &str,
) -> sqlx::Result<Option<SessionRow>> {
    Ok(by_id(db, id)
        .await?
        .filter(|row| row.merchant_id == scope.merchant_id && row.livemode == scope.livemode))
}

/// The session with its transactions, in one statement: a retrieve is one round trip. The
/// transactions come as one JSON array (amounts as text, exact), so the session's columns
/// are mapped by name (`FromRow`) rather than by the checked macros, which cannot take a
/// nested list; the retrieve tests exercise it.
pub async fn find_with_transactions(
    db: &PgPool,
    scope: Scope,
    id: &str,
) -> sqlx::Result<Option<(SessionRow, Vec<TransactionRow>)>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        session: SessionRow,
        transactions: sqlx::types::Json<Vec<ListedTransfer>>,
    }
    #[derive(serde::Deserialize)]
    struct ListedTransfer {
        tx_hash: String,
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        network: Network,
        status: TransactionStatus,
        created_at: DateTime<Utc>,
        credited: bool,
        late: bool,
        blocked: bool,
    }
    let found: Option<Found> = sqlx::query_as(
        r#"SELECT s.id, s.merchant_id, s.livemode, s.sub_merchant_code, s.status, s.amount,
                  s.amount_received, s.fee_rate, s.fee_floor, s.fee_amount, s.net_amount,
                  s.currency, s.network, s.chain_family, s.currency_contract, s.token_decimals,
                  s.detection_rpc_url, s.pay_address, s.address_xpub, s.address_index,
                  s.pricing_amount, s.pricing_currency, s.exchange_rate, s.client_reference_id,
                  s.success_url, s.cancel_url, s.merchant_name, s.merchant_logo_url,
                  s.created_at, s.expires_at, s.paid_at, s.updated_at, s.dust_count,
                  s.unexpected_count,
                  COALESCE((SELECT json_agg(json_build_object(
                                   'tx_hash', t.tx_hash, 'amount', t.amount::text,
                                   'network', t.network, 'status', t.status,
                                   'created_at', t.created_at, 'credited', t.credited,
                                   'late', t.late, 'blocked', t.blocked)
                                   ORDER BY t.created_at, t.id)
                              FROM transactions t
                             WHERE t.session_id = s.id AND NOT t.unexpected),
                           '[]') AS transactions
             FROM checkout_sessions s
            WHERE s.id = $1 AND s.merchant_id = $2 AND s.livemode = $3"#,
    )
    .bind(id)
    .bind(scope.merchant_id)
    .bind(scope.livemode)
    .fetch_optional(db)
    .await?;
    Ok(found.map(
        |Found {
             session,
             transactions,
         }| {
            let transactions = transactions
                .0
                .into_iter()
                .map(|t| TransactionRow {
                    session_id: session.id.clone(),
                    tx_hash: t.tx_hash,
                    amount: t.amount,
                    network: t.network,
                    status: t.status,
                    created_at: t.created_at,
                    credited: t.credited,
                    late: t.late,
                    blocked: t.blocked,
                })
                .collect();
            (session, transactions)
        },
    ))
}

/// A transfer as the public page shows it.
#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        PageTransfer,
        r#"SELECT tx_hash AS "tx_hash!", amount AS "amount!", status AS "status!: _",
                  block_number, block_time
             FROM (SELECT id, created_at, tx_hash, amount, status, block_number, block_time
                     FROM transactions
                    WHERE session_id = $1 AND NOT unexpected
                    ORDER BY created_at DESC, id DESC LIMIT 20) newest
            ORDER BY created_at, id"#,
        session_id,
    )
    .fetch_all(db)
    .await
}

/// The logo URL the session shows, if the session exists and has one.
pub async fn logo_url(db: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT merchant_logo_url FROM checkout_sessions WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// Listed transactions (transfers of the session's own token: another token's are counted in
/// `anomalies.unexpected` instead) of the given sessions, oldest first.
pub async fn transactions_of(
    db: impl PgExecutor<'_>,
    session_ids: &[SessionId],
) -> sqlx::Result<Vec<TransactionRow>> {
    if session_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        TransactionRow,
        r#"SELECT session_id AS "session_id: _", tx_hash, amount, network AS "network: _",
                  status AS "status: _",
                  created_at, credited, late, blocked
             FROM transactions
            WHERE session_id = ANY($1) AND NOT unexpected
            ORDER BY created_at, id"#,
        session_ids as &[SessionId],
    )
    .fetch_all(db)
    .await
}

/// The newest `limit` listed transactions of one session, oldest first.
pub async fn newest_transactions(
    db: impl PgExecutor<'_>,
    session_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<TransactionRow>> {
    sqlx::query_as!(
        TransactionRow,
        r#"SELECT session_id AS "session_id!: _", tx_hash AS "tx_hash!", amount AS "amount!",
                  network AS "network!: _", status AS "status!: _", created_at AS "created_at!",
                  credited AS "credited!", late AS "late!", blocked AS "blocked!"
             FROM (SELECT id, session_id, tx_hash, amount, network, status, created_at, credited,
                          late, blocked
                     FROM transactions
                    WHERE session_id = $1 AND NOT unexpected
                    ORDER BY created_at DESC, id DESC LIMIT $2) newest
            ORDER BY created_at, id"#,
        session_id,
        limit,
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    pub network: Option<Network>,
    pub client_reference_id: Option<ClientReferenceId>,
    pub sub_merchant_code: Option<SubMerchantCode>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// One page, newest first, and the total matching count.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    f: &SessionFilter,
    rows: PageRequest,
) -> sqlx::Result<(Vec<SessionRow>, i64)> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM checkout_sessions
            WHERE merchant_id = $1 AND livemode = $2
              AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR network = $4)
              AND ($5::text IS NULL OR client_reference_id = $5)
              AND ($6::text IS NULL OR sub_merchant_code = $6)
              AND ($7::timestamptz IS NULL OR created_at > $7)
              AND ($8::timestamptz IS NULL OR created_at < $8)"#,
        scope.merchant_id,
        scope.livemode,
        f.status as Option<SessionStatus>,
        f.network as Option<Network>,
        f.client_reference_id.as_ref() as Option<&ClientReferenceId>,
        f.sub_merchant_code.as_ref() as Option<&SubMerchantCode>,
        f.created_after,
        f.created_before,
    )
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as!(
        SessionRow,
        r#"SELECT id AS "id: _", merchant_id, livemode, sub_merchant_code AS "sub_merchant_code: _", status AS "status: _", amount,
              amount_received, fee_rate, fee_floor, fee_amount, net_amount, currency AS "currency: _",
              network AS "network: _", chain_family AS "chain_family: _", currency_contract,
              token_decimals, detection_rpc_url, pay_address, address_xpub, address_index,
              pricing_amount, pricing_currency AS "pricing_currency: _", exchange_rate,
              client_reference_id AS "client_reference_id: _", success_url, cancel_url, merchant_name, merchant_logo_url,
              created_at, expires_at, paid_at, updated_at, dust_count, unexpected_count
             FROM checkout_sessions
            WHERE merchant_id = $1 AND livemode = $2
              AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR network = $4)
              AND ($5::text IS NULL OR client_reference_id = $5)
              AND ($6::text IS NULL OR sub_merchant_code = $6)
              AND ($7::timestamptz IS NULL OR created_at > $7)
              AND ($8::timestamptz IS NULL OR created_at < $8)
            ORDER BY created_at DESC, id DESC LIMIT $9 OFFSET $10"#,
        scope.merchant_id,
        scope.livemode,
        f.status as Option<SessionStatus>,
        f.network as Option<Network>,
        f.client_reference_id.as_ref() as Option<&ClientReferenceId>,
        f.sub_merchant_code.as_ref() as Option<&SubMerchantCode>,
        f.created_after,
        f.created_before,
        rows.limit,
        rows.offset,
    )
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

/// Expires an open (Pending or Underpaid) session; `None` when it is not open or not found.
pub async fn expire_open(
    conn: &mut PgConnection,
    scope: Scope,
    id: &str,
) -> sqlx::Result<Option<SessionRow>> {
    let expired = sqlx::query_scalar!(
        "UPDATE checkout_sessions SET status = 'Expired', updated_at = now()
          WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND status IN ('Pending', 'Underpaid')
         RETURNING id",
        id,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match expired {
        Some(id) => by_id(conn, &id).await,
        None => Ok(None),
    }
}
