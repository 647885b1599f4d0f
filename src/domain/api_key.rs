use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

crate::domain::names::string_enum! {
    pub enum Mode ("a mode") {
        Test = "test", Live = "live",
    }
}

impl Mode {
    pub fn livemode(self) -> bool {
        matches!(self, Mode::Live)
    }

    pub fn from_livemode(livemode: bool) -> Self {
        if livemode {
            Mode::Live
        } else {
            Mode::Test
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            Mode::Test => "sk_test_",
            Mode::Live => "sk_live_",
        }
    }
}

/// A secret API key: `sk_test_` / `sk_live_` + base58 of 32 random bytes.
/// Only its SHA-256 is stored; `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey {
    secret: String,
    mode: Mode,
}

/// SHA-256 of the whole key string. Keys carry 256 bits of entropy, so a fast hash is enough.
pub type KeyHash = [u8; 32];

impl ApiKey {
    pub fn generate(mode: Mode) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            secret: format!("{}{}", mode.key_prefix(), bs58::encode(bytes).into_string()),
            mode,
        }
    }

    /// Parses the shape of a key (prefix and alphabet); whether it exists is the database's call.
    pub fn parse(s: &str) -> Option<Self> {
        let (mode, rest) = if let Some(rest) = s.strip_prefix("sk_test_") {
            (Mode::Test, rest)
        } else if let Some(rest) = s.strip_prefix("sk_live_") {
            (Mode::Live, rest)
        } else {
            return None;
        };
        let plausible =
            (32..=128).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric());
        plausible.then(|| Self {
            secret: s.to_owned(),
            mode,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn hash(&self) -> KeyHash {
        Sha256::digest(self.secret.as_bytes()).into()
    }

    /// The first characters, safe to log and show in listings.
    pub fn display_prefix(&self) -> String {
        self.secret.chars().take(12).collect()
    }

    pub fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for mode in [Mode::Test, Mode::Live] {
            let key = ApiKey::generate(mode);
            let parsed = ApiKey::parse(key.expose_secret()).unwrap();
            assert_eq!(parsed.mode(), mode);
            assert_eq!(parsed.hash(), key.hash());
            assert!(key.expose_secret().len() >= 8 + 43);
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = ApiKey::generate(Mode::Test);
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose_secret()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "sk_test_",
            "sk_prod_abcdefghijklmnopqrstuvwxyzabcdefgh",
            "sk_test_short",
            "sk_test_abc def ghi jkl mno pqr stu vwx yz12",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }
}
