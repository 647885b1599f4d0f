//! Checkout sessions: pricing, fees, pay address, and the one transaction that creates them.

use crate::db::idempotency::{self, Claim};
use crate::db::merchants::Merchant;
use crate::db::sessions::{self as db, NewSession, SessionFilter, SessionRow, TransactionRow};
use crate::db::sub_merchants;
use crate::domain::api_key::Mode;
use crate::domain::ids::{SessionId, SubMerchantCode};
use crate::domain::money::{
    convert_to_token, format_amount, FeeSchedule, PricingCurrency, Token, MAX_TOKEN_AMOUNT,
    MIN_TOKEN_AMOUNT, RATE_SCALE,
};
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::SessionStatus;
use crate::domain::sub_merchant::SubMerchantStatus;
use crate::domain::urls::HttpUrl;
use crate::error::{ApiError, ApiResult};
use crate::faults::FaultPoint;
use crate::state::AppState;
use crate::views::session_json;
use chrono::{DurationRound, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

/// A create request whose fields each parsed; the rules between them are checked here.
#[derive(Debug, Clone)]
pub struct CreateSession {
    pub pricing_amount: Decimal,
    pub pricing_currency: PricingCurrency,
    pub currency: Token,
    pub network: Network,
    pub success_url: HttpUrl,
    pub cancel_url: HttpUrl,
    pub client_reference_id: Option<String>,
    pub sub_merchant_code: Option<SubMerchantCode>,
}

/// Token amount and the rate it was priced at (8 decimals).
async fn price(state: &AppState, req: &CreateSession) -> ApiResult<(Decimal, Decimal)> {
    let pricing_amount = req.pricing_amount;
    if pricing_amount <= Decimal::ZERO {
        return Err(ApiError::invalid(
            "pricing_amount",
            "must be greater than 0",
        ));
    }
    let max_decimals = req.pricing_currency.max_decimals();
    if pricing_amount.scale() > max_decimals {
        let message = match max_decimals {
            0 => format!("{} amounts take no decimals", req.pricing_currency.as_str()),
            n => format!("may have at most {n} decimals"),
        };
        return Err(ApiError::invalid("pricing_amount", message));
    }
    let in_range = |amount: Decimal| (MIN_TOKEN_AMOUNT..=MAX_TOKEN_AMOUNT).contains(&amount);
    match req.pricing_currency {
        PricingCurrency::Token(token) => {
            if token != req.currency {
                return Err(ApiError::invalid(
                    "pricing_currency",
                    format!(
                        "pricing in a stablecoin must use the settlement currency ({}), not {}",
                        req.currency.as_str(),
                        token.as_str()
                    ),
                ));
            }
            if !in_range(pricing_amount) {
                return Err(ApiError::invalid(
                    "pricing_amount",
                    "must be between 1.00 and 10000000.00",
                ));
            }
            Ok((pricing_amount, Decimal::ONE))
        }
        PricingCurrency::Fiat(code) => {
            let rate = state
                .rates
                .rate(req.currency, code)
                .await?
                .round_dp_with_strategy(RATE_SCALE, RoundingStrategy::MidpointNearestEven);
            if rate <= Decimal::ZERO {
                return Err(ApiError::unavailable(format!(
                    "the {code} rate is not usable"
                )));
            }
            let amount = convert_to_token(pricing_amount, rate)
                .ok_or_else(|| ApiError::invalid("pricing_amount", "is too large"))?;
            if !in_range(amount) {
                return Err(ApiError::invalid(
                    "pricing_amount",
                    format!(
                        "converts to {} {}; the amount must be between 1 and 10000000 {}",
                        format_amount(amount),
                        req.currency.as_str(),
                        req.currency.as_str()
                    ),
                ));
            }
            Ok((amount, rate))
        }
    }
}

/// Creates the session. With an idempotency claim, the key's stored reply is written in the
/// same statement as the session, so the two can never diverge.
pub async fn create(
    state: &AppState,
    merchant: &Merchant,
    mode: Mode,
    req: CreateSession,
    claim: Option<&Claim>,
) -> ApiResult<SessionRow> {
    let net = state.config.network(req.network, mode);
    if !net.enabled() {
        return Err(ApiError::invalid(
            "network",
            format!(
                "{} is not enabled for {} mode on this server",
                req.network.as_str(),
                mode.as_str()
            ),
        ));
    }
    let token = net.token(req.currency).ok_or_else(|| {
        ApiError::invalid(
            "currency",
            format!(
                "{} is not available on {}",
                req.currency.as_str(),
                req.network.as_str()
            ),
        )
    })?;
    let family = req.network.family();
    let (amount, exchange_rate) = price(state, &req).await?;

    let xpub_text = match family {
        ChainFamily::Tron => merchant.tron_xpub.as_deref(),
        ChainFamily::Evm => merchant.evm_xpub.as_deref(),
        ChainFamily::Solana => None,
    }
    .or_else(|| state.config.wallets.for_family(family).map(|x| x.as_str()))
    .ok_or_else(|| {
        ApiError::invalid(
            "network",
            format!(
                "no {} wallet (xpub) is configured for this merchant or the server; pay addresses cannot be derived",
                family.as_str().to_uppercase()
            ),
        )
    })?;
    let xpub = state.xpubs.get(xpub_text).map_err(ApiError::internal)?;
    if mode == Mode::Live && xpub.is_public_test_key() {
        return Err(ApiError::invalid(
            "network",
            format!(
                "the {} wallet is the public test xpub, which anyone can spend from; configure your own for live mode",
                family.as_str().to_uppercase()
            ),
        ));
    }

    let (merchant_name, merchant_logo_url) = match &req.sub_merchant_code {
        None => (merchant.name.clone(), merchant.logo_url.clone()),
        Some(code) => {
            let sub = sub_merchants::find(&state.db, merchant.id, mode.livemode(), code.as_str())
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "X-Sub-Merchant-Code",
                        format!("no sub-merchant '{}'", code.as_str()),
                    )
                })?;
            if sub.status != SubMerchantStatus::Active {
                return Err(ApiError::invalid(
                    "X-Sub-Merchant-Code",
                    format!("sub-merchant '{}' is suspended", code.as_str()),
                ));
            }
            (sub.display_name, sub.logo_url)
        }
    };

    crate::service::chain_health::ensure_fresh(state, net).await?;

    let fees = FeeSchedule {
        rate: merchant.fee_rate.unwrap_or(state.config.fees.rate),
        floor: state.config.fees.floor(req.network),
    };
    let (fee_amount, net_amount) = fees.split(amount);
    let created_at = Utc::now();
    let expires_at = created_at
        .duration_trunc(chrono::Duration::seconds(1))
        .map_err(ApiError::internal)?
        + state.config.session_ttl;

    let mut tx = state.db.begin().await?;
    let index = db::allocate_address_index(&mut *tx, family, xpub.key_id()).await?;
    let index_u32 = u32::try_from(index)
        .ok()
        .filter(|i| *i < (1 << 31))
        .ok_or_else(|| {
            ApiError::internal(format!("xpub address space exhausted at index {index}"))
        })?;
    let pay_address = xpub
        .derive_address(family, index_u32)
        .map_err(ApiError::internal)?;
    let new = NewSession {
        id: SessionId::generate().to_string(),
        merchant_id: merchant.id,
        livemode: mode.livemode(),
        sub_merchant_code: req.sub_merchant_code.map(|c| c.as_str().to_owned()),
        amount,
        fee_rate: fees.rate,
        fee_floor: fees.floor,
        fee_amount,
        net_amount,
        currency: req.currency,
        network: req.network,
        chain_family: family,
        currency_contract: token.contract.clone(),
        token_decimals: i16::from(token.decimals),
        detection_rpc_url: net.public_rpc_url.clone(),
        pay_address,
        address_xpub: xpub.as_str().to_owned(),
        address_index: index,
        pricing_amount: req.pricing_amount,
        pricing_currency: req.pricing_currency,
        exchange_rate,
        client_reference_id: req.client_reference_id,
        success_url: req.success_url.into_string(),
        cancel_url: req.cancel_url.into_string(),
        merchant_name,
        merchant_logo_url,
        created_at,
        expires_at,
    };
    let row = db::insert(&mut *tx, &new, claim).await?.ok_or_else(|| {
        ApiError::idempotency(
            "request_in_progress",
            "another request with this Idempotency-Key took over; retry to get its result",
        )
    })?;
    if let Some(claim) = claim {
        let reply = serde_json::to_vec(&session_json(&row, &[], &state.config.base_url))
            .map_err(ApiError::internal)?;
        idempotency::complete(&mut *tx, claim, 201, &reply).await?;
    }
    state.faults.hit(FaultPoint::SessionWritten);
    tx.commit().await?;
    state.faults.hit(FaultPoint::SessionCommitted);
    tracing::info!(session.id = %row.id, network = %row.network, amount = %row.amount, "session created");
    Ok(row)
}

fn session_missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no checkout session '{id}'"))
}

/// A malformed id is as missing as an unknown one.
fn parse_id(id: &str) -> ApiResult<SessionId> {
    SessionId::parse(id).ok_or_else(|| session_missing(id))
}

pub async fn retrieve(
    state: &AppState,
    merchant: &Merchant,
    mode: Mode,
    id: &str,
) -> ApiResult<(SessionRow, Vec<TransactionRow>)> {
    let id = parse_id(id)?;
    let row = db::find(&state.db, merchant.id, mode.livemode(), id.as_str())
        .await?
        .ok_or_else(|| session_missing(id.as_str()))?;
    let txs = db::transactions_of(&state.db, std::slice::from_ref(&row.id)).await?;
    Ok((row, txs))
}

pub async fn list(
    state: &AppState,
    merchant: &Merchant,
    mode: Mode,
    filter: &SessionFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<SessionRow>, Vec<TransactionRow>, i64)> {
    let (rows, total) = db::list(
        &state.db,
        merchant.id,
        mode.livemode(),
        filter,
        limit,
        offset,
    )
    .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let txs = db::transactions_of(&state.db, &ids).await?;
    Ok((rows, txs, total))
}

pub async fn expire(
    state: &AppState,
    merchant: &Merchant,
    mode: Mode,
    id: &str,
) -> ApiResult<(SessionRow, Vec<TransactionRow>)> {
    let id = parse_id(id)?;
    let mut tx = state.db.begin().await?;
    if let Some(row) = db::expire_open(&mut tx, merchant.id, mode.livemode(), id.as_str()).await? {
        crate::service::events::record(
            &mut tx,
            &row.id,
            crate::domain::event::EventType::Expired,
            &state.config.base_url,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(session.id = %row.id, "session expired on request");
        let txs = db::transactions_of(&state.db, std::slice::from_ref(&row.id)).await?;
        return Ok((row, txs));
    }
    drop(tx);
    let row = db::find(&state.db, merchant.id, mode.livemode(), id.as_str())
        .await?
        .ok_or_else(|| session_missing(id.as_str()))?;
    Err(match row.status {
        SessionStatus::Expired => {
            ApiError::gone("session_expired", "this session has already expired")
        }
        SessionStatus::Blocked => ApiError::conflict(
            "session_blocked",
            "this session is blocked and cannot be expired",
        ),
        status => ApiError::conflict(
            "session_completed",
            format!("this session is {status} and can no longer be expired"),
        ),
    })
}
