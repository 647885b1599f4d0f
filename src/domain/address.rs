//! Watch-only xpubs and the TRON/EVM addresses derived from them.

use super::network::ChainFamily;
use alloy_primitives::{keccak256, Address};
use bip32::{ChildNumber, XPub};
use std::fmt;
use std::str::FromStr;

/// The public account xpubs of the BIP39 test mnemonic (`abandon` ×11 + `about`).
/// Fine for test mode and demos, refused for live mode.
pub const PUBLIC_TEST_EVM_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";
pub const PUBLIC_TEST_TRON_XPUB: &str = "xpub6D1AabNHCupeiLM65ZR9UStMhJ1vCpyV4XbZdyhMZBiJXALQtmn9p42VTQckoHVn8WNqS7dqnJokZHAHcHGoaQgmv8D45oNUKx6DZMNZBCd";

/// An account-level (`m/44'/coin'/account'`) extended public key.
/// Holds the already-derived external chain (`…/0`) so each address costs one derivation.
#[derive(Clone)]
pub struct AccountXpub {
    text: String,
    external: XPub,
}

impl AccountXpub {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let xpub = XPub::from_str(s)
            .map_err(|_| "is not a valid extended public key (xpub…)".to_string())?;
        if xpub.attrs().depth != 3 {
            return Err(format!(
                "must be an account-level xpub (depth 3, m/44'/coin'/account'), got depth {}",
                xpub.attrs().depth
            ));
        }
        let external = xpub
            .derive_child(ChildNumber::new(0, false).expect("0 is a valid index"))
            .map_err(|_| "cannot derive the external chain from this xpub".to_string())?;
        Ok(Self {
            text: s.to_owned(),
            external,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_public_test_key(&self) -> bool {
        self.text == PUBLIC_TEST_EVM_XPUB || self.text == PUBLIC_TEST_TRON_XPUB
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
