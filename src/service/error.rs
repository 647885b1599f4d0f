//! What a service refuses or fails with, in the domain's terms. `http::error` alone turns it
//! into statuses, error codes and the names of parameters and headers.

use std::fmt;

/// A request field a rule can refuse, by its domain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Amount,
    Currency,
    DisplayName,
    Events,
    Network,
    PricingAmount,
    PricingCurrency,
    SubMerchantCode,
    Url,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::DisplayName => "display_name",
            Field::Events => "events",
            Field::Network => "network",
            Field::PricingAmount => "pricing_amount",
            Field::PricingCurrency => "pricing_currency",
            Field::SubMerchantCode => "sub_merchant_code",
            Field::Url => "url",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a change cannot be made to a resource in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The session has expired: nothing will change it any more.
    SessionExpired,
    SessionBlocked,
    /// The session is paid (or otherwise closed).
    SessionCompleted,
    /// A resource with this field's value exists.
    AlreadyExists(Field),
    /// Another request with the same idempotency key took the work over.
    RequestInProgress,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value breaks a rule; `reason` is for the caller.
    #[error("{field}: {reason}")]
    Invalid { field: Field, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{reason}")]
    Conflict { kind: ConflictKind, reason: String },
    /// Over a limit: retry after `retry_after` seconds.
    #[error("{reason}")]
    RateLimited { retry_after: u64, reason: String },
    /// A dependency (a rate source, a chain watcher) cannot serve now: retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A bug or a broken invariant: the cause is logged, never shown.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: Field, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn conflict(kind: ConflictKind, reason: impl Into<String>) -> Self {
        Self::Conflict {
            kind,
            reason: reason.into(),
        }
    }

    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}
