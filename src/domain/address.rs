//! Watch-only xpubs and the TRON/EVM addresses derived from them.

use super::network::ChainFamily;
use alloy_primitives::{keccak256, Address};
use bip32::{ChildNumber, XPub};
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

/// The public account xpubs of the BIP39 test mnemonic (`abandon` ×11 + `about`).
/// Fine for test mode and demos, refused for live mode.
pub const PUBLIC_TEST_EVM_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";
pub const PUBLIC_TEST_TRON_XPUB: &str = "xpub6D1AabNHCupeiLM65ZR9UStMhJ1vCpyV4XbZdyhMZBiJXALQtmn9p42VTQckoHVn8WNqS7dqnJokZHAHcHGoaQgmv8D45oNUKx6DZMNZBCd";

/// The key ids of the public test xpubs, whatever encoding they come in.
static PUBLIC_TEST_KEY_IDS: LazyLock<[String; 2]> = LazyLock::new(|| {
    [PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB].map(|text| {
        AccountXpub::parse(text)
            .expect("the public test xpubs are valid")
            .key_id
    })
});

/// BIP-32 version bytes: mainnet and testnet public, and their private counterparts.
const XPUB_VERSION: u32 = 0x0488_b21e;
const TPUB_VERSION: u32 = 0x0435_87cf;
const XPRV_VERSION: u32 = 0x0488_ade4;
const TPRV_VERSION: u32 = 0x0435_8394;

/// An account-level (`m/44'/coin'/account'`) extended public key.
/// Holds the already-derived external chain (`…/0`) so each address costs one derivation.
#[derive(Clone)]
pub struct AccountXpub {
    text: String,
    key_id: String,
    /// `account` in `m/44'/coin'/account'` (the xpub's child number, without the hardened bit).
    account_index: u32,
    external: XPub,
}

/// The only fields a key's addresses depend on: chain code and compressed public key, in hex.
fn key_id_of(xpub: &XPub) -> String {
    let mut material = Vec::with_capacity(65);
    material.extend_from_slice(&xpub.attrs().chain_code);
    material.extend_from_slice(&xpub.to_bytes());
    hex::encode(material)
}

impl AccountXpub {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        // The bip32 crate would turn a private key into its public one; the text (kept in the
        // database) would still be the private key. Only public versions are accepted.
        let version = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .ok()
            .and_then(|payload| payload.get(..4).map(|v| [v[0], v[1], v[2], v[3]]));
        match version.map(u32::from_be_bytes) {
            Some(XPUB_VERSION | TPUB_VERSION) => {}
            Some(XPRV_VERSION | TPRV_VERSION) => {
                return Err(
                    "is a private key (xprv…): give the watch-only account xpub; this server never holds private keys"
                        .into(),
                )
            }
            _ => return Err("is not a valid extended public key (xpub…)".into()),
        }
        let xpub = XPub::from_str(s)
            .map_err(|_| "is not a valid extended public key (xpub…)".to_string())?;
        if xpub.attrs().depth != 3 {
            return Err(format!(
                "must be an account-level xpub (depth 3, m/44'/coin'/account'), got depth {}",
                xpub.attrs().depth
            ));
        }
        let external = xpub
            .derive_child(ChildNumber(0))
            .map_err(|_| "cannot derive the external chain from this xpub".to_string())?;
        Ok(Self {
            text: s.to_owned(),
            key_id: key_id_of(&xpub),
            account_index: xpub.attrs().child_number.index(),
            external,
        })
    }

    /// The text it was parsed from. One key has many encodings (the version, parent
    /// fingerprint and child number do not change its addresses): never compare this text,
    /// compare [`AccountXpub::key_id`].
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key's identity: lowercase hex of its 32-byte chain code followed by its 33-byte
    /// compressed public key, the only fields its addresses depend on. Equal for every
    /// encoding of one key; the address allocator is keyed on it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `account` in `m/44'/coin'/account'`.
    pub fn account_index(&self) -> u32 {
        self.account_index
    }

    /// Whether `xpub` (derived from a seed, say) is this very key.
    pub fn is_key_of(&self, xpub: &XPub) -> bool {
        key_id_of(xpub) == self.key_id
    }

    /// One of the public test keys (in any encoding): fine for test mode, refused live.
    pub fn is_public_test_key(&self) -> bool {
        PUBLIC_TEST_KEY_IDS.contains(&self.key_id)
    }

    /// The 20-byte account behind child `…/0/index`.
    pub fn derive(&self, index: u32) -> Result<[u8; 20], String> {
        let child = ChildNumber::new(index, false)
            .map_err(|_| format!("address index {index} is out of range"))?;
        let key = self
            .external
            .derive_child(child)
            .map_err(|_| format!("cannot derive address index {index}"))?;
        let point = key.public_key().to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Ok(out)
    }

    pub fn derive_address(&self, family: ChainFamily, index: u32) -> Result<String, String> {
        let raw = self.derive(index)?;
        match family {
            ChainFamily::Evm => Ok(evm_checksum(&raw)),
            ChainFamily::Tron => Ok(tron_base58(&raw)),
            ChainFamily::Solana => Err("Solana addresses cannot be derived from an xpub".into()),
        }
    }
}

impl fmt::Debug for AccountXpub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountXpub({}…)", &self.text[..12.min(self.text.len())])
    }
}

pub fn evm_checksum(raw: &[u8; 20]) -> String {
    Address::from_slice(raw).to_checksum(None)
}

pub fn tron_base58(raw: &[u8; 20]) -> String {
    let mut payload = [0u8; 21];
    payload[0] = 0x41;
    payload[1..].copy_from_slice(raw);
    bs58::encode(payload).with_check().into_string()
}

/// The 20 bytes of a TRON base58check address (`T…`, prefix `0x41`).
pub fn parse_tron_address(s: &str) -> Result<[u8; 20], String> {
    let bytes = bs58::decode(s)
        .with_check(None)
        .into_vec()
        .map_err(|_| "is not a valid TRON base58check address".to_string())?;
    if bytes.len() != 21 || bytes[0] != 0x41 {
        return Err("is not a TRON address (expected 21 bytes with prefix 0x41)".into());
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(&bytes[1..]);
    Ok(out)
}

/// The 20 bytes of an EVM address; a mixed-case address must carry a valid EIP-55 checksum.
pub fn parse_evm_address(s: &str) -> Result<[u8; 20], String> {
    let hex_part = s
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| "is not an EVM address (0x + 40 hex digits)".to_string())?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| "is not valid hex".to_string())?;
    let mixed_case = hex_part.bytes().any(|b| b.is_ascii_uppercase())
        && hex_part.bytes().any(|b| b.is_ascii_lowercase());
    if mixed_case && evm_checksum(&out) != s {
        return Err("has a wrong EIP-55 checksum".into());
    }
    Ok(out)
}

/// A contract address in its family's canonical text form (TRON base58, EVM EIP-55).
pub fn canonical_contract(family: ChainFamily, s: &str) -> Result<String, String> {
    match family {
        ChainFamily::Tron => parse_tron_address(s).map(|raw| tron_base58(&raw)),
        ChainFamily::Evm => parse_evm_address(s).map(|raw| evm_checksum(&raw)),
        ChainFamily::Solana => {
            let ok = bs58::decode(s)
                .into_vec()
                .map(|v| v.len() == 32)
                .unwrap_or(false);
            if ok {
                Ok(s.to_owned())
            } else {
                Err("is not a valid Solana address".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evm_test_vectors() {
        let xpub = AccountXpub::parse(PUBLIC_TEST_EVM_XPUB).unwrap();
        let want = [
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0",
            "0xb6716976A3ebe8D39aCEB04372f22Ff8e6802D7A",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(xpub.derive_address(ChainFamily::Evm, i as u32).unwrap(), *w);
        }
        assert!(xpub.is_public_test_key());
    }

    #[test]
    fn tron_test_vectors() {
        let xpub = AccountXpub::parse(PUBLIC_TEST_TRON_XPUB).unwrap();
        let want = [
            "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
            "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK",
            "TYJPRrdB5APNeRs4R7fYZSwW3TcrTKw2gx",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                xpub.derive_address(ChainFamily::Tron, i as u32).unwrap(),
                *w
            );
        }
    }

    /// `xpub` with other metadata (parent fingerprint, child number), same key material.
    fn reencoded(xpub: &str, fingerprint: [u8; 4], child: u32) -> String {
        let mut payload = bs58::decode(xpub).with_check(None).into_vec().unwrap();
        payload[5..9].copy_from_slice(&fingerprint);
        payload[9..13].copy_from_slice(&child.to_be_bytes());
        bs58::encode(payload).with_check().into_string()
    }

    #[test]
    fn a_reencoded_public_test_key_is_still_a_public_test_key() {
        for public in [PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB] {
            let copy = reencoded(public, [1, 2, 3, 4], 0x8000_0005);
            assert_ne!(copy, public);
            let xpub = AccountXpub::parse(&copy).unwrap();
            assert!(xpub.is_public_test_key(), "{copy}");
        }
    }

    #[test]
    fn key_id_is_the_key_material_whatever_the_encoding() {
        let xpub = AccountXpub::parse(PUBLIC_TEST_EVM_XPUB).unwrap();
        let payload = bs58::decode(PUBLIC_TEST_EVM_XPUB)
            .with_check(None)
            .into_vec()
            .unwrap();
        // Chain code (32 bytes) then the compressed public key (33 bytes).
        assert_eq!(xpub.key_id(), hex::encode(&payload[13..78]));
        assert_eq!(xpub.key_id().len(), 130);
        for (fingerprint, child) in [([0; 4], 0x8000_0000), ([9, 9, 9, 9], 7), ([0xff; 4], 0)] {
            let copy =
                AccountXpub::parse(&reencoded(PUBLIC_TEST_EVM_XPUB, fingerprint, child)).unwrap();
            assert_eq!(copy.key_id(), xpub.key_id());
            assert_eq!(
                copy.derive_address(ChainFamily::Evm, 0).unwrap(),
                xpub.derive_address(ChainFamily::Evm, 0).unwrap(),
                "same key, same addresses"
            );
        }
        let tron = AccountXpub::parse(PUBLIC_TEST_TRON_XPUB).unwrap();
        assert_ne!(tron.key_id(), xpub.key_id());
        // Another version (tpub) is the same key too.
        let mut tpub = payload.clone();
        tpub[..4].copy_from_slice(&0x0435_87cfu32.to_be_bytes());
        let tpub = bs58::encode(tpub).with_check().into_string();
        assert!(tpub.starts_with("tpub"));
        assert_eq!(AccountXpub::parse(&tpub).unwrap().key_id(), xpub.key_id());
    }

    #[test]
    fn only_account_level_keys_are_accepted() {
        let seed = [7u8; 32];
        for (path, ok) in [
            ("m/44'/60'/0'", true),
            ("m/44'/60'", false),
            ("m/44'/60'/0'/0", false),
        ] {
            let path = bip32::DerivationPath::from_str(path).unwrap();
            let text = bip32::XPrv::derive_from_path(seed, &path)
                .unwrap()
                .public_key()
                .to_string(bip32::Prefix::XPUB);
            match AccountXpub::parse(&text) {
                Ok(_) => assert!(ok, "{path}"),
                Err(e) => {
                    assert!(!ok, "{path}: {e}");
                    assert!(e.contains("account-level") && e.contains("depth"), "{e}");
                }
            }
        }
    }

    #[test]
    fn private_keys_are_refused_never_stored() {
        // The BIP-32 test vector 1 master private key.
        let xprv = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";
        let err = AccountXpub::parse(xprv).unwrap_err();
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn bad_xpubs() {
        assert!(AccountXpub::parse("xpub123").is_err());
        assert!(AccountXpub::parse("").is_err());
        // A valid xpub with a flipped character fails its checksum.
        let mut broken = PUBLIC_TEST_EVM_XPUB.to_string();
        broken.replace_range(20..21, if &broken[20..21] == "a" { "b" } else { "a" });
        assert!(AccountXpub::parse(&broken).is_err());
    }

    #[test]
    fn contract_addresses() {
        assert_eq!(
            canonical_contract(
                ChainFamily::Evm,
                "0xdac17f958d2ee523a2206206994597c13d831ec7"
            )
            .unwrap(),
            "0xdAC17F958D2ee523a2206206994597C13D831ec7"
        );
        assert!(canonical_contract(
            ChainFamily::Evm,
            "0xdAC17F958D2ee523a2206206994597C13D831eC7"
        )
        .is_err());
        assert!(canonical_contract(ChainFamily::Evm, "0x1234").is_err());
        assert_eq!(
            canonical_contract(ChainFamily::Tron, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t").unwrap(),
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
        );
        assert!(
            canonical_contract(ChainFamily::Tron, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u").is_err()
        );
        let raw = parse_tron_address("TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH").unwrap();
        assert_eq!(tron_base58(&raw), "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH");
    }
}
