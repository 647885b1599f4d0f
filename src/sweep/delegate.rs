//! `SweepDelegate.sol`, compiled once and committed (`SweepDelegate.json`; a test rebuilds it
//! with solc and compares), deployed through the canonical CREATE2 deployer so that its
//! address follows from the treasury alone, on every network.

use alloy_primitives::{address, Address, Bytes, B256};
use alloy_sol_types::{sol, SolCall, SolValue};
use std::sync::LazyLock;

sol! {
    function sweep(address[] tokens);
    function sweepMany(address[] accounts, address[] tokens);
    function treasury() returns (address);
    function balanceOf(address owner) returns (uint256);
    function transfer(address to, uint256 value) returns (bool);
    event Transfer(address indexed from, address indexed to, uint256 value);
}

pub use self::{balanceOfCall as BalanceOf, sweepManyCall as SweepMany, treasuryCall as Treasury};

/// The deterministic-deployment proxy at the same address on every EVM network (and in
/// anvil): it runs CREATE2 with the first 32 bytes of the call data as the salt.
pub const CREATE2_DEPLOYER: Address = address!("4e59b44847b379578588920ca78fbf26c0b4956c");

/// One salt for every deployment: the address depends on the treasury only.
pub const SALT: B256 = B256::ZERO;

/// An EIP-7702 delegated account's code: this prefix and the delegate's address.
pub const DELEGATION_PREFIX: [u8; 3] = [0xef, 0x01, 0x00];

#[derive(serde::Deserialize)]
struct Artifact {
    bytecode: String,
}

static CREATION_CODE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let artifact: Artifact = serde_json::from_str(include_str!("SweepDelegate.json"))
        .expect("SweepDelegate.json is valid");
    hex::decode(artifact.bytecode.trim_start_matches("0x")).expect("the bytecode is hex")
});

/// The contract's creation code followed by its constructor argument.
pub fn init_code(treasury: Address) -> Vec<u8> {
    let mut code = CREATION_CODE.clone();
    code.extend_from_slice(&treasury.abi_encode());
    code
}

/// Where the delegate for `treasury` lives once deployed (the same on every network).
pub fn delegate_address(treasury: Address) -> Address {
    CREATE2_DEPLOYER.create2_from_code(SALT, init_code(treasury))
}

/// The call data that makes [`CREATE2_DEPLOYER`] deploy the delegate for `treasury`.
pub fn deploy_call(treasury: Address) -> Bytes {
    let mut data = SALT.to_vec();
    data.extend_from_slice(&init_code(treasury));
    data.into()
}

/// The code an account holds once delegated to `delegate`.
pub fn delegation_code(delegate: Address) -> Vec<u8> {
    [&DELEGATION_PREFIX[..], delegate.as_slice()].concat()
}

pub fn sweep_many_call(accounts: Vec<Address>, tokens: Vec<Address>) -> Bytes {
    SweepMany { accounts, tokens }.abi_encode().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delegate_address_follows_from_the_treasury() {
        let a = delegate_address(address!("00000000000000000000000000000000000000aa"));
        let b = delegate_address(address!("00000000000000000000000000000000000000bb"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            delegate_address(address!("00000000000000000000000000000000000000aa"))
        );
        assert_eq!(delegation_code(a).len(), 23);
    }
}
