//! What `scripts/api-conformance` holds the server to, pinned down where the spec and the
//! server once disagreed.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// `display_name` is at most 200 characters as sent (the spec's `maxLength`), not once
/// trimmed: a 201-character name ending in a space was accepted.
#[tokio::test]
async fn a_display_name_over_200_characters_is_refused_even_when_trimming_would_fit_it() {
    let app = TestApp::spawn().await;
    let key = app.merchant.test_key.clone();
    let long = format!("{} ", "a".repeat(200));
    let (status, body) = app
        .request(
            Method::POST,
            "/v1/sub-merchants",
            Some(&key),
            Some(json!({"sub_merchant_code": "shop", "display_name": long})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "display_name");

    let fits = format!(" {} ", "a".repeat(198));
    let (status, body) = app
        .request(
            Method::POST,
            "/v1/sub-merchants",
            Some(&key),
            Some(json!({"sub_merchant_code": "shop", "display_name": fits})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["display_name"], "a".repeat(198), "stored trimmed");

    let (status, body) = app
        .request(
            Method::PATCH,
            "/v1/sub-merchants/shop",
            Some(&key),
            Some(json!({"display_name": long})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "display_name");
}
