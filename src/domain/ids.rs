use rand::RngCore;
use std::fmt;

/// `prefix` + 32 lowercase hex characters (128 random bits), e.g. `evt_…`, `we_…`.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Whether `s` is `prefix` + 32 lowercase hex characters.
pub fn is_random_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `cs_` + 32 lowercase hex characters (128 random bits): the only secret of the hosted page.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("cs_{}", hex::encode(bytes)))
    }

    /// `None` for anything that is not a well-formed id (so lookups of junk are plain 404s).
    pub fn parse(s: &str) -> Option<Self> {
        let hex_part = s.strip_prefix("cs_")?;
        let well_formed = hex_part.len() == 32
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sub-merchant code: 1–100 chars of `[A-Za-z0-9_-]`, not starting with `_`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SubMerchantCode(String);

impl SubMerchantCode {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.len() > 100 {
            return Err("must be 1 to 100 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("may contain only letters, digits, '_' and '-'");
        }
        if s.starts_with('_') {
            return Err("must not start with '_'");
        }
        Ok(Self(s.to_owned()))
    }
}

/// The merchant's own reference for a session: at most 200 characters, none of them control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ClientReferenceId(String);

impl ClientReferenceId {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.chars().count() > 200 {
            return Err("must be at most 200 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(s.to_owned()))
    }
}

impl std::str::FromStr for SessionId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or("is not a session id")
    }
}

crate::domain::names::checked_text!(ClientReferenceId, SubMerchantCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_well_formed_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert!(SessionId::parse(a.as_str()).is_some());
        assert_eq!(a.as_str().len(), 35);
    }

    #[test]
    fn session_id_parse_rejects_junk() {
        for bad in [
            "",
            "cs_",
            "cs_ABCDEF0123456789abcdef0123456789",
            "cs_0123456789abcdef0123456789abcde",
            "xx_0123456789abcdef0123456789abcdef",
            "cs_0123456789abcdef0123456789abcdeg",
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sub_merchant_codes() {
        assert!(SubMerchantCode::parse("shop_tokyo").is_ok());
        assert!(SubMerchantCode::parse("A-1").is_ok());
        assert!(SubMerchantCode::parse("_x").is_err());
        assert!(SubMerchantCode::parse("").is_err());
        assert!(SubMerchantCode::parse("a b").is_err());
        assert!(SubMerchantCode::parse(&"a".repeat(101)).is_err());
        assert!(SubMerchantCode::parse(&"a".repeat(100)).is_ok());
    }
}
