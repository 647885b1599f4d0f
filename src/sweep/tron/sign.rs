//! `sweep sign --plan plan.json`, offline: derives each deposit address's key from the
//! mnemonic (`m/44'/195'/account'/0/index`), after checking the account xpub is the plan's,
//! and signs its USDT transfer to the treasury; with an offline staking key, also the energy
//! delegations. The output holds signed transactions only, no key. The broadcaster rebuilds
//! every transaction from the plan and accepts only those exact bytes, signed by their owner.

use super::plan::{Plan, StakingSigner, PLAN_VERSION};
use super::protocol::{self as tron, Raw, Transaction};
use crate::domain::address::{parse_tron_address, AccountXpub};
use crate::domain::network::Network;
use crate::sweep::authorize::{account_key, AuthorizeError};
use bip32::ChildNumber;
use chrono::{DateTime, Utc};
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use prost::Message;
use serde::{Deserialize, Serialize};

/// `sweep sign` refuses a plan with less time than this left before it expires.
pub const MIN_TIME_LEFT: chrono::Duration = chrono::Duration::minutes(10);

/// What `sweep sign` writes and `sweep broadcast` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPlan {
    pub plan: Plan,
    pub transfers: Vec<SignedTransaction>,
    /// Offline staking key: the energy delegations and undelegations, signed.
    #[serde(default)]
    pub delegations: Vec<SignedTransaction>,
    #[serde(default)]
    pub undelegations: Vec<SignedTransaction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTransaction {
    /// The deposit address it is for.
    pub address: String,
    pub tx_id: String,
    /// The signed `Transaction`, protobuf, in hex.
    pub transaction: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the plan: {0}")]
    Plan(String),
    #[error("the plan expired at {0} (or expires within 10 minutes): make a new plan")]
    Expired(DateTime<Utc>),
    #[error("the mnemonic is not a valid BIP-39 English phrase")]
    Mnemonic,
    #[error("the mnemonic (and passphrase) derive another account xpub than the plan's")]
    WrongMnemonic,
    #[error("address index {0} does not derive the plan's address {1}")]
    WrongAddress(u32, String),
    #[error("the plan's delegations are signed offline: give --staking-key-file")]
    NoStakingKey,
    #[error("--staking-key-file is not the key of the plan's staking account {0}")]
    WrongStakingKey(String),
    #[error("the plan's delegations are signed by the server: --staking-key-file is not needed")]
    StakingKeyNotNeeded,
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The transactions a plan stands for, unsigned, by deposit address.
pub struct Expected {
    pub transfers: Vec<(String, Raw)>,
    pub delegations: Vec<(String, Raw)>,
    pub undelegations: Vec<(String, Raw)>,
}

/// Builds the plan's transfers, and its delegations when they are signed offline.
pub fn expected(plan: &Plan) -> Result<Expected, String> {
    if plan.version != PLAN_VERSION {
        return Err(format!("version {} is not {PLAN_VERSION}", plan.version));
    }
    if plan.network != Network::Tron {
        return Err("not a TRON plan".into());
    }
    let reference = plan.reference()?;
    let undelegation = plan.undelegation_reference()?;
    let token = parse_tron_address(&plan.token.contract).map_err(|m| format!("token {m}"))?;
    let treasury = parse_tron_address(&plan.treasury).map_err(|m| format!("treasury {m}"))?;
    let mut transfers = Vec::with_capacity(plan.items.len());
    let mut delegations = Vec::new();
    let mut undelegations = Vec::new();
    let staking = match (plan.staking_signer, &plan.staking_account) {
        (Some(StakingSigner::Offline), Some(account)) => {
            Some(parse_tron_address(account).map_err(|m| format!("staking account {m}"))?)
        }
        (Some(StakingSigner::Offline), None) => return Err("no staking account".into()),
        _ => None,
    };
    for item in &plan.items {
        let owner = item.account()?;
        let raw = tron::token_transfer(
            &reference,
            &owner,
            &token,
            &treasury,
            item.units()?,
            plan.fee_limit_sun,
        );
        transfers.push((item.address.clone(), raw));
        if let (Some(staking), Some(balance)) = (staking, item.delegated_sun) {
            delegations.push((
                item.address.clone(),
                tron::delegate_energy(&reference, &staking, &owner, balance),
            ));
            undelegations.push((
                item.address.clone(),
                tron::undelegate_energy(&undelegation, &staking, &owner, balance),
            ));
        }
    }
    Ok(Expected {
        transfers,
        delegations,
        undelegations,
    })
}

fn signed(address: &str, raw: Raw, key: &SigningKey) -> Result<SignedTransaction, SignError> {
    let signature = tron::sign(&raw, key).map_err(|e| SignError::Sign(e.to_string()))?;
    Ok(SignedTransaction {
        address: address.to_owned(),
        tx_id: hex::encode(tron::tx_id(&raw)),
        transaction: hex::encode(tron::signed_transaction(raw, signature)),
    })
}

/// Signs the plan's transfers with the mnemonic's keys (and its delegations with
/// `staking_key`, when the plan says they are signed offline).
pub fn sign(
    plan: &Plan,
    mnemonic: &str,
    passphrase: &str,
    staking_key: Option<&SigningKey>,
    now: DateTime<Utc>,
) -> Result<SignedPlan, SignError> {
    let expected = expected(plan).map_err(SignError::Plan)?;
    if plan.expires_at() - MIN_TIME_LEFT <= now {
        return Err(SignError::Expired(plan.expires_at()));
    }
    match (plan.staking_signer, staking_key) {
        (Some(StakingSigner::Offline), None) => return Err(SignError::NoStakingKey),
        (Some(StakingSigner::Offline), Some(key)) => {
            let account = tron::account_of(key);
            let named = plan.staking_account.clone().unwrap_or_default();
            if parse_tron_address(&named).ok() != Some(account) {
                return Err(SignError::WrongStakingKey(named));
            }
        }
        (_, Some(_)) => return Err(SignError::StakingKeyNotNeeded),
        _ => {}
    }
    let xpub = AccountXpub::parse(&plan.xpub).map_err(|m| SignError::Plan(format!("xpub {m}")))?;
    let account = account_key(mnemonic, passphrase, 195, &xpub).map_err(|e| match e {
        AuthorizeError::WrongMnemonic => SignError::WrongMnemonic,
        AuthorizeError::Xpub(m) => SignError::Plan(format!("xpub {m}")),
        _ => SignError::Mnemonic,
    })?;
    let external = account
        .derive_child(ChildNumber(0))
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let mut transfers = Vec::with_capacity(plan.items.len());
    for (item, (address, raw)) in plan.items.iter().zip(expected.transfers) {
        let child = ChildNumber::new(item.address_index, false)
            .ok()
            .and_then(|n| external.derive_child(n).ok())
            .ok_or_else(|| SignError::WrongAddress(item.address_index, address.clone()))?;
        let key = child.private_key();
        if item.account().ok() != Some(tron::account_of(key)) {
            return Err(SignError::WrongAddress(item.address_index, address));
        }
        transfers.push(signed(&address, raw, key)?);
    }
    let mut delegations = Vec::new();
    let mut undelegations = Vec::new();
    if let Some(key) = staking_key {
        for (address, raw) in expected.delegations {
            delegations.push(signed(&address, raw, key)?);
        }
        for (address, raw) in expected.undelegations {
            undelegations.push(signed(&address, raw, key)?);
        }
    }
    Ok(SignedPlan {
        plan: plan.clone(),
        transfers,
        delegations,
        undelegations,
    })
}

/// The account whose key made `signature` over `raw`.
pub fn signer_of(raw: &Raw, signature: &[u8]) -> Option<[u8; 20]> {
    if signature.len() != 65 {
        return None;
    }
    let parsed = Signature::from_slice(&signature[..64]).ok()?;
    let recovery = RecoveryId::from_byte(signature[64].checked_sub(27)?)?;
    let key = VerifyingKey::recover_from_prehash(&tron::tx_id(raw), &parsed, recovery).ok()?;
    let point = key.to_encoded_point(false);
    let hash = alloy_primitives::keccak256(&point.as_bytes()[1..]);
    hash[12..].try_into().ok()
}

/// Checks signed transactions against those the plan stands for: the same bytes, for the
/// same address, signed by `owner(address)`. Returns them decoded.
pub fn verified(
    signed: &[SignedTransaction],
    expected: Vec<(String, Raw)>,
    owner: impl Fn(&str) -> Option<[u8; 20]>,
    what: &str,
) -> Result<Vec<(String, Transaction)>, String> {
    if signed.len() != expected.len() {
        return Err(format!(
            "{} {what} signed, the plan has {}",
            signed.len(),
            expected.len()
        ));
    }
    signed
        .iter()
        .zip(expected)
        .map(|(s, (address, raw))| {
            let bad = |why: &str| format!("the {what} for {}: {why}", s.address);
            if s.address != address {
                return Err(bad("not in the plan's order"));
            }
            let bytes = hex::decode(&s.transaction).map_err(|_| bad("not hex"))?;
            let transaction =
                Transaction::decode(bytes.as_slice()).map_err(|_| bad("not a transaction"))?;
            if transaction.raw_data.as_ref() != Some(&raw) {
                return Err(bad("not the transaction the plan stands for"));
            }
            let [signature] = transaction.signature.as_slice() else {
                return Err(bad("not signed once"));
            };
            if signer_of(&raw, signature).is_none_or(|a| Some(a) != owner(&address)) {
                return Err(bad("not signed by its owner"));
            }
            if s.tx_id != hex::encode(tron::tx_id(&raw)) {
                return Err(bad("tx_id is not its id"));
            }
            Ok((address, transaction))
        })
        .collect()
}
