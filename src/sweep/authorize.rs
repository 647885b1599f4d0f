//! `sweep authorize`: signs, offline, the EIP-7702 authorizations that delegate deposit
//! addresses to the merchant's `SweepDelegate`. The output holds signatures only, no key:
//! each one can only ever point its address at that delegate, whose code can only pay the
//! treasury.

use crate::domain::address::{evm_checksum, AccountXpub};
use alloy_eips::eip7702::{Authorization, SignedAuthorization};
use alloy_primitives::{Address, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use bip32::{ChildNumber, DerivationPath, XPrv};
use serde::{Deserialize, Serialize};

/// Deposit addresses never send a transaction, so their nonce is 0 when first delegated
/// (each delegation raises it by one: an address delegated once is re-pointed at nonce 1).
pub const AUTHORIZATION_NONCE: u64 = 0;

/// At most this many addresses per file (a file of 100,000 is about 25 MB).
pub const MAX_ADDRESSES: u32 = 100_000;

/// The file `sweep authorize` writes and `sweep import-authorizations` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationFile {
    /// The merchant's EVM account xpub (`m/44'/60'/account'`), as the server holds it.
    pub xpub: String,
    pub chain_id: u64,
    pub delegate: Address,
    pub authorizations: Vec<SignedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignedEntry {
    /// The child index: the address is `…/0/index`.
    pub index: u32,
    pub address: Address,
    pub nonce: u64,
    pub y_parity: u8,
    pub r: U256,
    pub s: U256,
}

impl SignedEntry {
    pub fn signed(&self, chain_id: u64, delegate: Address) -> SignedAuthorization {
        let inner = Authorization {
            chain_id: U256::from(chain_id),
            address: delegate,
            nonce: self.nonce,
        };
        SignedAuthorization::new_unchecked(inner, self.y_parity, self.r, self.s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the mnemonic is not a valid BIP-39 English phrase")]
    Mnemonic,
    #[error("--xpub {0}")]
    Xpub(String),
    #[error("the mnemonic derives a different account xpub than --xpub (wrong mnemonic, passphrase or account)")]
    WrongMnemonic,
    #[error("the index range [{from}, {to}) is empty or longer than {MAX_ADDRESSES}")]
    Range { from: u32, to: u32 },
    #[error("cannot derive address index {0}")]
    Derive(u32),
    #[error("cannot sign for address index {0}")]
    Sign(u32),
    #[error("--chain-id 0 would sign for every chain: give the network's chain id")]
    AnyChain,
}

/// The private account key `m/44'/coin'/account'` of `mnemonic` (+ `passphrase`), after
/// checking that it is the key of `account` (the xpub the server holds).
pub fn account_key(
    mnemonic: &str,
    passphrase: &str,
    coin: u32,
    account: &AccountXpub,
) -> Result<XPrv, AuthorizeError> {
    let words = mnemonic.split_whitespace().collect::<Vec<_>>().join(" ");
    let phrase = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &words)
        .map_err(|_| AuthorizeError::Mnemonic)?;
    let seed = zeroize::Zeroizing::new(phrase.to_seed_normalized(passphrase));
    // The account index is the xpub's own child number (hardened), so any account works.
    let path: DerivationPath = format!("m/44'/{coin}'/{}'", account.account_index())
        .parse()
        .map_err(|_| AuthorizeError::Xpub("has an account index out of range".into()))?;
    let key = XPrv::derive_from_path(*seed, &path).map_err(|_| AuthorizeError::Mnemonic)?;
    if !account.is_key_of(&key.public_key()) {
        return Err(AuthorizeError::WrongMnemonic);
    }
    Ok(key)
}

/// Signs `(chain_id, delegate, nonce 0)` for the addresses `[from, to)` of the account that
/// `xpub` names, after checking that `mnemonic` (+ `passphrase`) derives that very xpub.
#[allow(clippy::too_many_arguments)]
pub fn authorize(
    mnemonic: &str,
    passphrase: &str,
    xpub: &str,
    chain_id: u64,
    delegate: Address,
    from: u32,
    to: u32,
    nonce: u64,
) -> Result<AuthorizationFile, AuthorizeError> {
    if chain_id == 0 {
        return Err(AuthorizeError::AnyChain);
    }
    if to <= from || to - from > MAX_ADDRESSES {
        return Err(AuthorizeError::Range { from, to });
    }
    let account = AccountXpub::parse(xpub).map_err(AuthorizeError::Xpub)?;
    let account_key = account_key(mnemonic, passphrase, 60, &account)?;
    let external = account_key
        .derive_child(ChildNumber(0))
        .map_err(|_| AuthorizeError::Derive(from))?;
    let mut authorizations = Vec::with_capacity((to - from) as usize);
    for index in from..to {
        let child = ChildNumber::new(index, false)
            .ok()
            .and_then(|n| external.derive_child(n).ok())
            .ok_or(AuthorizeError::Derive(index))?;
        let signer = PrivateKeySigner::from_signing_key(child.private_key().clone());
        let expected = account
            .derive(index)
            .map_err(|_| AuthorizeError::Derive(index))?;
        if signer.address().0 .0 != expected {
            return Err(AuthorizeError::Derive(index));
        }
        let authorization = Authorization {
            chain_id: U256::from(chain_id),
            address: delegate,
            nonce,
        };
        let signature = signer
            .sign_hash_sync(&authorization.signature_hash())
            .map_err(|_| AuthorizeError::Sign(index))?;
        authorizations.push(SignedEntry {
            index,
            address: signer.address(),
            nonce,
            y_parity: u8::from(signature.v()),
            r: signature.r(),
            s: signature.s(),
        });
    }
    Ok(AuthorizationFile {
        xpub: account.as_str().to_owned(),
        chain_id,
        delegate,
        authorizations,
    })
}

/// Why an imported entry is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("the file's xpub is not the merchant's EVM xpub")]
    OtherXpub,
    #[error("chain id 0 (valid on every chain) is refused")]
    AnyChain,
    #[error("authorization {position}: {reason}")]
    Entry { position: usize, reason: String },
}

/// Checks every entry of a file against `account` (the merchant's xpub): its address is the
/// child at its index, and its signature recovers to that address for this chain and delegate.
pub fn verify(file: &AuthorizationFile, account: &AccountXpub) -> Result<(), ImportError> {
    let theirs = AccountXpub::parse(&file.xpub).map_err(|_| ImportError::OtherXpub)?;
    if theirs.key_id() != account.key_id() {
        return Err(ImportError::OtherXpub);
    }
    if file.chain_id == 0 {
        return Err(ImportError::AnyChain);
    }
    let mut seen = std::collections::HashSet::new();
    for (position, entry) in file.authorizations.iter().enumerate() {
        let refuse = |reason: String| ImportError::Entry { position, reason };
        if !seen.insert(entry.address) {
            return Err(refuse(format!("address {} is listed twice", entry.address)));
        }
        let expected = account.derive(entry.index).map_err(refuse)?;
        if entry.address.0 .0 != expected {
            return Err(refuse(format!(
                "address {} is not child {} of the xpub (expected {})",
                entry.address,
                entry.index,
                evm_checksum(&expected)
            )));
        }
        let signer = entry
            .signed(file.chain_id, file.delegate)
            .recover_authority()
            .map_err(|_| refuse("the signature does not recover".into()))?;
        if signer != entry.address {
            return Err(refuse(format!(
                "signed by {signer}, not by {}",
                entry.address
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::address::PUBLIC_TEST_EVM_XPUB;
    use alloy_primitives::address;

    const TEST_MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    const DELEGATE: Address = address!("00000000000000000000000000000000000000d1");

    #[test]
    fn signs_for_the_xpubs_own_addresses_and_verifies() {
        let file = authorize(
            TEST_MNEMONIC,
            "",
            PUBLIC_TEST_EVM_XPUB,
            31337,
            DELEGATE,
            3,
            6,
            0,
        )
        .unwrap();
        assert_eq!(file.authorizations.len(), 3);
        let account = AccountXpub::parse(PUBLIC_TEST_EVM_XPUB).unwrap();
        for entry in &file.authorizations {
            assert_eq!(entry.address.0 .0, account.derive(entry.index).unwrap());
            assert_eq!(entry.nonce, 0);
        }
        verify(&file, &account).unwrap();
        // The first address of the test mnemonic, as every wallet derives it.
        let first = authorize(
            TEST_MNEMONIC,
            "",
            PUBLIC_TEST_EVM_XPUB,
            1,
            DELEGATE,
            0,
            1,
            0,
        )
        .unwrap();
        assert_eq!(
            first.authorizations[0].address,
            address!("9858EfFD232B4033E47d90003D41EC34EcaEda94")
        );
    }

    #[test]
    fn refuses_a_mnemonic_of_another_wallet_and_a_tampered_file() {
        let other = "legal winner thank year wave sausage worth useful legal winner thank yellow";
        assert!(matches!(
            authorize(other, "", PUBLIC_TEST_EVM_XPUB, 1, DELEGATE, 0, 1, 0),
            Err(AuthorizeError::WrongMnemonic)
        ));
        assert!(matches!(
            authorize(
                TEST_MNEMONIC,
                "passphrase",
                PUBLIC_TEST_EVM_XPUB,
                1,
                DELEGATE,
                0,
                1,
                0
            ),
            Err(AuthorizeError::WrongMnemonic)
        ));
        assert!(matches!(
            authorize("not words", "", PUBLIC_TEST_EVM_XPUB, 1, DELEGATE, 0, 1, 0),
            Err(AuthorizeError::Mnemonic)
        ));
        assert!(matches!(
            authorize(
                TEST_MNEMONIC,
                "",
                PUBLIC_TEST_EVM_XPUB,
                1,
                DELEGATE,
                5,
                5,
                0
            ),
            Err(AuthorizeError::Range { .. })
        ));
        let account = AccountXpub::parse(PUBLIC_TEST_EVM_XPUB).unwrap();
        let file = authorize(
            TEST_MNEMONIC,
            "",
            PUBLIC_TEST_EVM_XPUB,
            1,
            DELEGATE,
            0,
            2,
            0,
        )
        .unwrap();
        // Replayed on another chain, or pointed at another delegate: the signer changes.
        let mut other_chain = file.clone();
        other_chain.chain_id = 56;
        assert!(matches!(
            verify(&other_chain, &account),
            Err(ImportError::Entry { position: 0, .. })
        ));
        let mut other_delegate = file.clone();
        other_delegate.delegate = address!("00000000000000000000000000000000000000d2");
        assert!(verify(&other_delegate, &account).is_err());
        let mut swapped = file.clone();
        swapped.authorizations[1].index = 7;
        assert!(matches!(
            verify(&swapped, &account),
            Err(ImportError::Entry { position: 1, .. })
        ));
        let other_xpub = AccountXpub::parse(crate::domain::address::PUBLIC_TEST_TRON_XPUB).unwrap();
        assert_eq!(verify(&file, &other_xpub), Err(ImportError::OtherXpub));
    }
}
