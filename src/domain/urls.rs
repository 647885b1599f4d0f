use url::Url;

/// An absolute `http`/`https` URL of at most 2048 characters (redirect targets, logos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() > Self::MAX_LEN {
            return Err("must be at most 2048 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters");
        }
        let url = Url::parse(s).map_err(|_| "must be an absolute http or https URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must use the http or https scheme");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host");
        }
        Ok(Self(s.to_owned()))
    }
}

crate::domain::names::checked_text!(HttpUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_absolute_http_urls() {
        assert!(HttpUrl::parse("https://example.com/success?x=1").is_ok());
        assert!(HttpUrl::parse("http://localhost:3000/cancel").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "/relative",
            "example.com",
            "ftp://example.com",
            "https://",
            "https:// example.com",
            "",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(HttpUrl::parse(&long).is_err());
    }
}
