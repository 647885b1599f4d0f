//! TRON transactions built and signed here, against tronweb's own protobuf code and signer
//! (run offline from `tests/chain`): the same inputs give the same bytes, id and signature.

use alloy_primitives::{keccak256, U256};
use checkout_server::sweep::tron::{self, Raw, Reference};
use prost::Message;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const KEY: &str = "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";

fn account_of(key: &k256::ecdsa::SigningKey) -> [u8; 20] {
    let point = key.verifying_key().to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    hash[12..].try_into().unwrap()
}

fn hex41(account: &[u8; 20]) -> String {
    hex::encode(tron::protocol_address(account))
}

fn tronweb(cases: &Value) -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chain");
    let mut child = Command::new("node")
        .arg(dir.join("tron-reference.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (npm ci --prefix tests/chain first)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn usdt_trx_and_energy_delegation_transactions_match_tronweb_byte_for_byte() {
    let key = k256::ecdsa::SigningKey::from_slice(&hex::decode(KEY).unwrap()).unwrap();
    let owner = account_of(&key);
    let usdt = [0xa6u8; 20];
    let treasury = [0x77u8; 20];
    let deposit = [0x42u8; 20];
    let reference = Reference::from_block(
        67_012_345,
        &std::array::from_fn(|i| i as u8),
        1_764_198_000_000,
        1_764_198_000_000 + 23 * 3600 * 1000,
    );
    let amount = U256::from(1_234_567_890u64);
    let ours: Vec<Raw> = vec![
        tron::token_transfer(&reference, &owner, &usdt, &treasury, amount, 30_000_000),
        tron::trx_transfer(&reference, &owner, &deposit, 1_100_000),
        tron::delegate_energy(&reference, &owner, &deposit, 2_000_000_000),
        tron::undelegate_energy(&reference, &owner, &deposit, 2_000_000_000),
    ];
    let common = |contract_type: &str, value: Value, fee_limit: i64| {
        json!({
            "contract_type": contract_type, "value": value,
            "ref_block_bytes": hex::encode(reference.ref_block_bytes),
            "ref_block_hash": hex::encode(reference.ref_block_hash),
            "expiration": reference.expiration, "timestamp": reference.timestamp,
            "fee_limit": fee_limit, "private_key": KEY,
        })
    };
    let transfer_data = format!("a9059cbb{:0>64}{:064x}", hex::encode(treasury), amount);
    let cases = json!([
        common(
            "TriggerSmartContract",
            json!({
                "owner_address": hex41(&owner), "contract_address": hex41(&usdt),
                "call_value": 0, "data": transfer_data,
            }),
            30_000_000
        ),
        common(
            "TransferContract",
            json!({
                "owner_address": hex41(&owner), "to_address": hex41(&deposit), "amount": 1_100_000,
            }),
            0
        ),
        common(
            "DelegateResourceContract",
            json!({
                "owner_address": hex41(&owner), "receiver_address": hex41(&deposit),
                "balance": 2_000_000_000i64, "resource": "ENERGY", "lock": false,
            }),
            0
        ),
        common(
            "UnDelegateResourceContract",
            json!({
                "owner_address": hex41(&owner), "receiver_address": hex41(&deposit),
                "balance": 2_000_000_000i64, "resource": "ENERGY",
            }),
            0
        ),
    ]);
    let theirs = tronweb(&cases);
    for (i, (raw, reference)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            hex::encode(raw.encode_to_vec()),
            reference["raw_data_hex"],
            "case {i}: raw_data"
        );
        assert_eq!(
            hex::encode(tron::tx_id(raw)),
            reference["txID"],
            "case {i}: txID"
        );
        let signature = tron::sign(raw, &key).unwrap();
        assert_eq!(
            hex::encode(signature),
            reference["signature"],
            "case {i}: signature"
        );
        // The signed transaction decodes back to the same raw data and signature.
        let bytes = tron::signed_transaction(raw.clone(), signature);
        let decoded = tron::Transaction::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.raw_data.as_ref(), Some(raw));
        assert_eq!(decoded.signature, vec![signature.to_vec()]);
    }
}
