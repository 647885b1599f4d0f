//! Business rules and transaction boundaries.

pub mod chain_health;
pub mod error;
pub mod events;
pub mod hosted;
pub mod live_status;
pub mod logos;
pub mod merchants;
pub mod payments;
pub mod pricing;
pub mod sessions;
pub mod sub_merchants;
pub mod sweeps;
pub mod webhooks;

pub use crate::db::PageRequest;
pub use error::{ConflictKind, Error, Field};

use crate::db::merchants::Merchant;
use crate::db::Scope;
use crate::domain::api_key::Mode;
use crate::state::AppState;

/// An authenticated API call: the merchant, the mode its key is for, and the app it runs in.
#[derive(Clone)]
pub struct Caller {
    pub state: AppState,
    pub merchant: Merchant,
    pub mode: Mode,
}

impl Caller {
    pub fn scope(&self) -> Scope {
        Scope {
            merchant_id: self.merchant.id,
            livemode: self.mode.livemode(),
        }
    }
}

/// One page of a list, and how many items the whole list holds.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}
