//! Webhook secrets and both signature schemes of the API: IronixPay's `X-Timestamp` +
//! `X-Signature` (hex HMAC-SHA256 of `"{timestamp}.{body}"`, keyed with the whole secret
//! string) and Standard Webhooks' `webhook-id` / `webhook-timestamp` / `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, keyed with the secret's
//! decoded bytes). During a secret rotation the old secret signs both schemes too.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";

/// `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// IronixPay's `X-Signature`.
pub fn ironixpay_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(hmac(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    ))
}

/// One `v1,<base64>` entry of `webhook-signature`; `None` for a secret that does not decode.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mac = hmac(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    Some(format!("v1,{}", B64.encode(mac)))
}

/// The headers of one delivery, signed with `secret`. During a rotation `previous` (the old
/// secret) signs too: a second `webhook-signature` entry (space-separated, as Standard
/// Webhooks allows) and `X-Signature-Previous`, its IronixPay signature; `X-Signature` is
/// always the current secret's.
pub fn headers(
    secret: &str,
    previous: Option<&str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut out = vec![
        ("X-Timestamp".to_owned(), timestamp.to_string()),
        (
            "X-Signature".to_owned(),
            ironixpay_signature(secret, timestamp, body),
        ),
    ];
    if let Some(previous) = previous {
        out.push((
            "X-Signature-Previous".to_owned(),
            ironixpay_signature(previous, timestamp, body),
        ));
    }
    let standard: Vec<String> = std::iter::once(secret)
        .chain(previous)
        .filter_map(|s| standard_signature(s, id, timestamp, body))
        .collect();
    out.extend([
        ("webhook-id".to_owned(), id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), standard.join(" ")),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_documented_shape() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(B64.decode(&s[6..]).unwrap().len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // The Standard Webhooks specification's own example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // IronixPay: HMAC over "{timestamp}.{body}" keyed with the secret string itself.
        let sig = ironixpay_signature(secret, 1614265330, body);
        assert_eq!(sig.len(), 64);
        assert_eq!(
            sig,
            hex::encode(hmac(secret.as_bytes(), &[b"1614265330.", body]))
        );
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn rotation_signs_with_both() {
        let (new, old) = (new_secret(), new_secret());
        let h = headers(&new, Some(&old), "evt_1", 5, b"{}");
        assert_eq!(
            get(&h, "webhook-signature").unwrap(),
            format!(
                "{} {}",
                standard_signature(&new, "evt_1", 5, b"{}").unwrap(),
                standard_signature(&old, "evt_1", 5, b"{}").unwrap()
            )
        );
        assert_eq!(
            get(&h, "X-Signature"),
            Some(ironixpay_signature(&new, 5, b"{}").as_str())
        );
        assert_eq!(
            get(&h, "X-Signature-Previous"),
            Some(ironixpay_signature(&old, 5, b"{}").as_str())
        );

        let h = headers(&new, None, "evt_1", 5, b"{}");
        assert_eq!(get(&h, "X-Signature-Previous"), None);
        assert_eq!(get(&h, "webhook-signature").unwrap().split(' ').count(), 1);
        assert_eq!(get(&h, "webhook-id"), Some("evt_1"));
        assert_eq!(get(&h, "X-Timestamp"), Some("5"));
    }
}
