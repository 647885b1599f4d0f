//! TRON transactions, built and signed offline: the few protobuf messages a sweep needs,
//! declared here with the field numbers of TRON's protocol definitions (java-tron's
//! `protocol/src/main/protos/core/Tron.proto` for `Transaction`, `raw` and `Contract`;
//! `core/contract/balance_contract.proto` for `TransferContract`, `DelegateResourceContract`
//! and `UnDelegateResourceContract`; `core/contract/smart_contract.proto` for
//! `TriggerSmartContract`). The transaction id is SHA-256 of the encoded `raw_data`; the
//! signature is secp256k1 over that id, as `r ‖ s ‖ v` with `v` = recovery id + 27.
//! The tests check bytes, ids and signatures against tronweb for the same inputs.

use k256::ecdsa::SigningKey;
use prost::Message;
use sha2::{Digest, Sha256};

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `Transaction.Contract` (only the fields a sweep sets).
#[derive(Clone, PartialEq, Message)]
pub struct Contract {
    /// `ContractType`.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub parameter: Option<Any>,
    #[prost(int32, tag = "5")]
    pub permission_id: i32,
}

/// `Transaction.raw`.
#[derive(Clone, PartialEq, Message)]
pub struct Raw {
    #[prost(bytes = "vec", tag = "1")]
    pub ref_block_bytes: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub ref_block_hash: Vec<u8>,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "8")]
    pub expiration: i64,
    #[prost(bytes = "vec", tag = "10")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "11")]
    pub contract: Vec<Contract>,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "14")]
    pub timestamp: i64,
    /// In sun: the most TRX the energy of a contract call may burn.
    #[prost(int64, tag = "18")]
    pub fee_limit: i64,
}

/// `Transaction`.
#[derive(Clone, PartialEq, Message)]
pub struct Transaction {
    #[prost(message, optional, tag = "1")]
    pub raw_data: Option<Raw>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub signature: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TransferContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub to_address: Vec<u8>,
    /// In sun (1 TRX = 1,000,000 sun).
    #[prost(int64, tag = "3")]
    pub amount: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct TriggerSmartContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub contract_address: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub call_value: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// `ResourceCode`: `BANDWIDTH = 0`, `ENERGY = 1`.
pub const ENERGY: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct DelegateResourceContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub resource: i32,
    /// The staked TRX (in sun) whose resource is delegated.
    #[prost(int64, tag = "3")]
    pub balance: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub receiver_address: Vec<u8>,
    #[prost(bool, tag = "5")]
    pub lock: bool,
    #[prost(int64, tag = "6")]
    pub lock_period: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct UnDelegateResourceContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub resource: i32,
    #[prost(int64, tag = "3")]
    pub balance: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub receiver_address: Vec<u8>,
}

/// `Transaction.Contract.ContractType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractType {
    Transfer = 1,
    TriggerSmartContract = 31,
    DelegateResource = 57,
    UnDelegateResource = 58,
}

impl ContractType {
    fn type_url(self) -> &'static str {
        match self {
            Self::Transfer => "type.googleapis.com/protocol.TransferContract",
            Self::TriggerSmartContract => "type.googleapis.com/protocol.TriggerSmartContract",
            Self::DelegateResource => "type.googleapis.com/protocol.DelegateResourceContract",
            Self::UnDelegateResource => "type.googleapis.com/protocol.UnDelegateResourceContract",
        }
    }
}

/// The account of a key: the last 20 bytes of Keccak-256 of its uncompressed public key.
pub fn account_of(key: &SigningKey) -> [u8; 20] {
    let point = key.verifying_key().to_encoded_point(false);
    let hash = alloy_primitives::keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    out
}

/// A TRON address as the protocol carries it: `0x41` and the 20-byte account.
pub fn protocol_address(account: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.push(0x41);
    out.extend_from_slice(account);
    out
}

/// The block a transaction refers to (TAPOS), and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Bytes 6..8 of the reference block's number (big-endian).
    pub ref_block_bytes: [u8; 2],
    /// Bytes 8..16 of the reference block's id.
    pub ref_block_hash: [u8; 8],
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Milliseconds since the epoch; the network refuses a transaction after it, and one more
    /// than 24 hours after the reference block.
    pub expiration: i64,
}

impl Reference {
    /// From a block's number and 32-byte id.
    pub fn from_block(number: u64, id: &[u8; 32], timestamp: i64, expiration: i64) -> Self {
        let n = number.to_be_bytes();
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&id[8..16]);
        Self {
            ref_block_bytes: [n[6], n[7]],
            ref_block_hash: hash,
            timestamp,
            expiration,
        }
    }
}

/// One contract call or transfer, before its reference block is set.
pub fn raw(reference: &Reference, kind: ContractType, parameter: Vec<u8>, fee_limit: i64) -> Raw {
    Raw {
        ref_block_bytes: reference.ref_block_bytes.to_vec(),
        ref_block_hash: reference.ref_block_hash.to_vec(),
        expiration: reference.expiration,
        data: Vec::new(),
        contract: vec![Contract {
            r#type: kind as i32,
            parameter: Some(Any {
                type_url: kind.type_url().to_owned(),
                value: parameter,
            }),
            permission_id: 0,
        }],
        timestamp: reference.timestamp,
        fee_limit,
    }
}

/// A TRC-20 `transfer(to, amount)` from `owner`.
pub fn token_transfer(
    reference: &Reference,
    owner: &[u8; 20],
    token: &[u8; 20],
    to: &[u8; 20],
    amount: alloy_primitives::U256,
    fee_limit: i64,
) -> Raw {
    use alloy_sol_types::SolCall;
    let call = crate::sweep::delegate::transferCall {
        to: alloy_primitives::Address::from(*to),
        value: amount,
    };
    let parameter = TriggerSmartContract {
        owner_address: protocol_address(owner),
        contract_address: protocol_address(token),
        call_value: 0,
        data: call.abi_encode(),
    };
    raw(
        reference,
        ContractType::TriggerSmartContract,
        parameter.encode_to_vec(),
        fee_limit,
    )
}

/// A TRX transfer of `amount` sun.
pub fn trx_transfer(reference: &Reference, owner: &[u8; 20], to: &[u8; 20], amount: i64) -> Raw {
    let parameter = TransferContract {
        owner_address: protocol_address(owner),
        to_address: protocol_address(to),
        amount,
    };
    raw(
        reference,
        ContractType::Transfer,
        parameter.encode_to_vec(),
        0,
    )
}

/// Delegates the energy of `balance` sun of `owner`'s stake to `receiver` (no lock).
pub fn delegate_energy(
    reference: &Reference,
    owner: &[u8; 20],
    receiver: &[u8; 20],
    balance: i64,
) -> Raw {
    let parameter = DelegateResourceContract {
        owner_address: protocol_address(owner),
        resource: ENERGY,
        balance,
        receiver_address: protocol_address(receiver),
        lock: false,
        lock_period: 0,
    };
    raw(
        reference,
        ContractType::DelegateResource,
        parameter.encode_to_vec(),
        0,
    )
}

/// Takes back the energy delegated with [`delegate_energy`].
pub fn undelegate_energy(
    reference: &Reference,
    owner: &[u8; 20],
    receiver: &[u8; 20],
    balance: i64,
) -> Raw {
    let parameter = UnDelegateResourceContract {
        owner_address: protocol_address(owner),
        resource: ENERGY,
        balance,
        receiver_address: protocol_address(receiver),
    };
    raw(
        reference,
        ContractType::UnDelegateResource,
        parameter.encode_to_vec(),
        0,
    )
}

/// The transaction id: SHA-256 of the encoded `raw_data`.
pub fn tx_id(raw: &Raw) -> [u8; 32] {
    Sha256::digest(raw.encode_to_vec()).into()
}

/// Signs `raw` with `key`: `r ‖ s ‖ (recovery id + 27)`, over the transaction id.
pub fn sign(raw: &Raw, key: &SigningKey) -> Result<[u8; 65], k256::ecdsa::Error> {
    let (signature, recovery) = key.sign_prehash_recoverable(&tx_id(raw))?;
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&signature.to_bytes());
    out[64] = recovery.to_byte() + 27;
    Ok(out)
}

/// The signed transaction, encoded (what `/wallet/broadcasthex` takes).
pub fn signed_transaction(raw: Raw, signature: [u8; 65]) -> Vec<u8> {
    Transaction {
        raw_data: Some(raw),
        signature: vec![signature.to_vec()],
    }
    .encode_to_vec()
}
