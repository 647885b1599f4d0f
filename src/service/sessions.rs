//! Checkout sessions: pricing, fees, pay address, and the one statement that creates them.

use crate::db::idempotency::Claim;
use crate::db::sessions::{self as db, SessionFilter, SessionRow, TransactionRow};
use crate::db::sub_merchants;
use crate::domain::api_key::Mode;
use crate::domain::ids::{ClientReferenceId, SessionId, SubMerchantCode};
use crate::domain::money::{FeeSchedule, PricingCurrency, Token};
use crate::domain::network::Network;
use crate::domain::session::SessionStatus;
use crate::domain::sub_merchant::SubMerchantStatus;
use crate::domain::urls::HttpUrl;
use crate::faults::FaultPoint;
use crate::service::pricing::{self, Quote};
use crate::service::{Caller, ConflictKind, Error, Field, Page, PageRequest};
use crate::state::AppState;
use crate::views::session_json;
use chrono::{DurationRound, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// A create request whose fields each parsed; the rules between them are checked here.
#[derive(Debug, Clone)]
pub struct CreateSession {
    pub pricing_amount: Decimal,
    pub pricing_currency: PricingCurrency,
    pub currency: Token,
    pub network: Network,
    pub success_url: HttpUrl,
    pub cancel_url: HttpUrl,
    pub client_reference_id: Option<ClientReferenceId>,
    pub sub_merchant_code: Option<SubMerchantCode>,
}

/// A session with its transactions, as the API shows it.
#[derive(Debug, Clone)]
pub struct SessionWithTransactions {
    pub session: SessionRow,
    pub transactions: Vec<TransactionRow>,
}

impl SessionWithTransactions {
    /// The API's session object.
    pub fn to_json(&self, base_url: &str) -> serde_json::Value {
        session_json(&self.session, &self.transactions, base_url)
    }
}

/// Creates the session. With an idempotency claim, the key's stored reply is written in the
/// same statement as the session, so the two can never diverge.
pub async fn create(
    caller: &Caller,
    req: CreateSession,
    claim: Option<&Claim>,
) -> Result<Created, Error> {
    let Caller {
        state,
        merchant,
        mode,
    } = caller;
    let mode = *mode;
    let net = state.config.network(req.network, mode);
    if !net.enabled() {
        return Err(Error::invalid(
            Field::Network,
            format!(
                "{} is not enabled for {} mode on this server",
                req.network.as_str(),
                mode.as_str()
            ),
        ));
    }
    let token = net.token(req.currency).ok_or_else(|| {
        Error::invalid(
            Field::Currency,
            format!(
                "{} is not available on {}",
                req.currency.as_str(),
                req.network.as_str()
            ),
        )
    })?;
    let family = req.network.family();
    let Quote {
        amount,
        exchange_rate,
    } = pricing::price(
        &state.rates,
        req.pricing_amount,
        req.pricing_currency,
        req.currency,
    )
    .await?;

    let xpub_text = merchant
        .xpub(family)
        .or_else(|| state.config.wallets.for_family(family).map(|x| x.as_str()))
    .ok_or_else(|| {
        Error::invalid(
            Field::Network,
            format!(
                "no {} wallet (xpub) is configured for this merchant or the server; pay addresses cannot be derived",
                family.as_str().to_uppercase()
            ),
        )
    })?;
    let xpub = state.xpubs.get(xpub_text).map_err(Error::internal)?;
    if mode == Mode::Live && xpub.is_public_test_key() {
        return Err(Error::invalid(
            Field::Network,
            format!(
                "the {} wallet is the public test xpub, which anyone can spend from; configure your own for live mode",
                family.as_str().to_uppercase()
            ),
        ));
    }

    let (merchant_name, merchant_logo_url) = match &req.sub_merchant_code {
        None => (merchant.name.clone(), merchant.logo_url.clone()),
        Some(code) => {
            let sub = sub_merchants::find(&state.db, caller.scope(), code.as_str())
                .await?
                .ok_or_else(|| {
                    Error::invalid(
                        Field::SubMerchantCode,
                        format!("no sub-merchant '{}'", code.as_str()),
                    )
                })?;
            if sub.status != SubMerchantStatus::Active {
                return Err(Error::invalid(
                    Field::SubMerchantCode,
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
    // Microseconds, as Postgres stores it: `new` is returned as the stored row.
    let created_at = Utc::now()
        .duration_trunc(chrono::Duration::microseconds(1))
        .map_err(Error::internal)?;
    let expires_at = created_at
        .duration_trunc(chrono::Duration::seconds(1))
        .map_err(Error::internal)?
        + state.config.session_ttl;

    let index = state
        .address_blocks
        .next(&state.db, family, xpub.key_id())
        .await?;
    let index_u32 = u32::try_from(index)
        .ok()
        .filter(|i| *i < (1 << 31))
        .ok_or_else(|| Error::internal(format!("xpub address space exhausted at index {index}")))?;
    let pay_address = xpub
        .derive_address(family, index_u32)
        .map_err(Error::internal)?;
    let new = SessionRow {
        id: SessionId::generate(),
        merchant_id: merchant.id,
        livemode: mode.livemode(),
        sub_merchant_code: req.sub_merchant_code,
        status: SessionStatus::Pending,
        amount,
        amount_received: Decimal::ZERO,
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
        paid_at: None,
        updated_at: created_at,
        dust_count: 0,
        unexpected_count: 0,
    };
    // Rendered once: the response, and with a key its stored reply.
    let json = serde_json::to_vec(&session_json(&new, &[], &state.config.base_url))
        .map_err(Error::internal)?;
    let reply = if claim.is_some() { &json[..] } else { &[] };
    state.faults.hit(FaultPoint::IndexTaken);
    // One statement, committed on its own: the session and, with a key, its stored reply.
    if !db::insert(&state.db, &new, claim, reply).await? {
        return Err(Error::conflict(
            ConflictKind::RequestInProgress,
            "another request with this Idempotency-Key took over; retry to get its result",
        ));
    }
    state.faults.hit(FaultPoint::SessionCommitted);
    crate::metrics::session_created(new.network, new.livemode);
    tracing::info!(session.id = %new.id, network = %new.network, amount = %new.amount, "session created");
    Ok(Created { json })
}

/// A created session's JSON, as answered (and stored for an idempotency key).
pub struct Created {
    pub json: Vec<u8>,
}

fn session_missing(id: &str) -> Error {
    Error::NotFound(format!("no checkout session '{id}'"))
}

/// A malformed id is as missing as an unknown one.
fn parse_id(id: &str) -> Result<SessionId, Error> {
    SessionId::parse(id).ok_or_else(|| session_missing(id))
}

async fn with_transactions(
    state: &AppState,
    session: SessionRow,
) -> Result<SessionWithTransactions, Error> {
    let transactions = db::transactions_of(&state.db, std::slice::from_ref(&session.id)).await?;
    Ok(SessionWithTransactions {
        session,
        transactions,
    })
}

pub async fn retrieve(caller: &Caller, id: &str) -> Result<SessionWithTransactions, Error> {
    let id = parse_id(id)?;
    let (session, transactions) =
        db::find_with_transactions(&caller.state.db, caller.scope(), id.as_str())
            .await?
            .ok_or_else(|| session_missing(id.as_str()))?;
    Ok(SessionWithTransactions {
        session,
        transactions,
    })
}

pub async fn list(
    caller: &Caller,
    filter: &SessionFilter,
    rows: PageRequest,
) -> Result<Page<SessionWithTransactions>, Error> {
    let db = &caller.state.db;
    let (rows, total) = db::list(db, caller.scope(), filter, rows).await?;
    let ids: Vec<SessionId> = rows.iter().map(|r| r.id.clone()).collect();
    let mut by_session: HashMap<SessionId, Vec<TransactionRow>> = HashMap::new();
    for t in db::transactions_of(db, &ids).await? {
        by_session.entry(t.session_id.clone()).or_default().push(t);
    }
    let items = rows
        .into_iter()
        .map(|session| SessionWithTransactions {
            transactions: by_session.remove(&session.id).unwrap_or_default(),
            session,
        })
        .collect();
    Ok(Page { items, total })
}

pub async fn expire(caller: &Caller, id: &str) -> Result<SessionWithTransactions, Error> {
    let (state, scope) = (&caller.state, caller.scope());
    let id = parse_id(id)?;
    let mut tx = state.db.begin().await?;
    if let Some(row) = db::expire_open(&mut tx, scope, id.as_str()).await? {
        crate::service::events::record(
            &mut tx,
            row.id.as_str(),
            crate::domain::event::EventType::Expired,
            &state.config.base_url,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(session.id = %row.id, "session expired on request");
        return with_transactions(state, row).await;
    }
    drop(tx);
    let row = db::find(&state.db, scope, id.as_str())
        .await?
        .ok_or_else(|| session_missing(id.as_str()))?;
    Err(match row.status {
        SessionStatus::Expired => Error::conflict(
            ConflictKind::SessionExpired,
            "this session has already expired",
        ),
        SessionStatus::Blocked => Error::conflict(
            ConflictKind::SessionBlocked,
            "this session is blocked and cannot be expired",
        ),
        status => Error::conflict(
            ConflictKind::SessionCompleted,
            format!("this session is {status} and can no longer be expired"),
        ),
    })
}
