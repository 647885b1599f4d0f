use crate::common::*;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

fn parse_time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap();
    assert!(
        s.ends_with('Z') && s.len() == 20,
        "whole seconds UTC with Z: {s}"
    );
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn the_seed_example_comes_back_as_documented() {
    let app = TestApp::spawn().await;
    let (status, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["amount"], "10.5");
    assert_eq!(s["amount_received"], "0");
    assert_eq!(s["fee_amount"], "1");
    assert_eq!(s["net_amount"], "9.5");
    assert_eq!(s["status"], "Pending");
    assert_eq!(s["livemode"], false);
    assert_eq!(s["currency"], "USDT");
    assert_eq!(s["network"], "TRON");
    assert_eq!(s["chain_family"], "tron");
    assert_eq!(s["currency_contract"], "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf");
    assert_eq!(
        s["pricing"],
        json!({"amount": "10.50", "currency": "USD", "exchange_rate": "1.00000000"})
    );
    assert_eq!(s["client_reference_id"], "order_20260211_001");
    assert_eq!(s["success_url"], "https://example.com/success");
    assert_eq!(s["cancel_url"], "https://example.com/cancel");
    assert_eq!(s["sub_merchant_code"], Value::Null);
    assert_eq!(s["merchant_name"], "Acme Store");
    assert_eq!(s["merchant_logo_url"], "https://example.com/logo.png");
    assert_eq!(s["transactions"], json!([]));
    let id = s["id"].as_str().unwrap();
    assert!(
        id.len() == 35
            && id.starts_with("cs_")
            && id[3..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(s["url"], format!("https://checkout.example.com/{id}"));
    let created = parse_time(&s["created_at"]);
    let expires = parse_time(&s["expires_at"]);
    assert_eq!(expires - created, chrono::Duration::minutes(30));
    assert!((Utc::now() - created).num_seconds().abs() < 5);
    let pay = s["pay_address"].as_str().unwrap();
    assert!(pay.starts_with('T') && pay.len() == 34, "{pay}");

    // Every field the seed shows is present.
    for field in [
        "amount",
        "amount_received",
        "cancel_url",
        "chain_family",
        "client_reference_id",
        "created_at",
        "currency",
        "currency_contract",
        "detection_rpc_url",
        "expires_at",
        "fee_amount",
        "id",
        "livemode",
        "merchant_logo_url",
        "merchant_name",
        "net_amount",
        "network",
        "pay_address",
        "pricing",
        "status",
        "sub_merchant_code",
        "success_url",
        "transactions",
        "url",
    ] {
        assert!(s.get(field).is_some(), "missing {field}");
    }

    // Retrieve gives the same object.
    let (status, fetched) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched, s);
}

#[tokio::test]
async fn evm_sessions_use_eip55_addresses_and_network_fees() {
    let app = TestApp::spawn().await;
    let mut req = seed_request();
    req["network"] = json!("bsc");
    req["pricing_currency"] = json!("USDC");
    req["currency"] = json!("USDC");
    req["pricing_amount"] = json!("100");
    let (status, s) = app.create_session(&app.merchant.test_key, req).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["network"], "BSC");
    assert_eq!(s["chain_family"], "evm");
    assert_eq!(
        s["currency_contract"],
        "0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d"
    );
    assert_eq!(s["fee_amount"], "0.5");
    assert_eq!(s["net_amount"], "99.5");
    assert_eq!(s["pricing"]["amount"], "100");
    let addr = s["pay_address"].as_str().unwrap();
    assert!(addr.starts_with("0x") && addr.len() == 42);
    assert!(
        addr.bytes().any(|b| b.is_ascii_uppercase()),
        "checksummed: {addr}"
    );
}

#[tokio::test]
async fn fiat_pricing_converts_with_the_configured_rate() {
    let app = TestApp::spawn().await;
    let mut req = seed_request();
    req["pricing_currency"] = json!("CNY");
    req["pricing_amount"] = json!("100.00");
    let (status, s) = app.create_session(&app.merchant.test_key, req).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["pricing"]["exchange_rate"], "7.10000000");
    assert_eq!(s["amount"], "14.084507");
    assert_eq!(s["pricing"]["amount"], "100.00");

    let mut req = seed_request();
    req["pricing_currency"] = json!("JPY");
    req["pricing_amount"] = json!("1500");
    let (status, s) = app.create_session(&app.merchant.test_key, req).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["amount"], "10");
}

#[tokio::test]
async fn demo_xpub_merchant_works_in_test_and_is_refused_live() {
    let app = TestApp::spawn().await;
    let m = create_merchant(&app.db, "No Wallet Shop", false).await;
    // No xpub anywhere: a 400 that says so.
    let (status, body) = app.create_session(&m.test_key, seed_request()).await;
    let e = assert_error(status, &body, 400, "parameter_invalid");
    assert!(e["message"].as_str().unwrap().contains("xpub"), "{e}");

    // With the public test xpubs as server defaults: test works and reproduces the vectors, live is refused.
    let app = TestApp::spawn_with(TEST_CONFIG, |c| {
        c.wallets.tron = Some(
            checkout_server::domain::address::AccountXpub::parse(
                checkout_server::domain::address::PUBLIC_TEST_TRON_XPUB,
            )
            .unwrap(),
        );
    })
    .await;
    let m = create_merchant(&app.db, "Default Wallet Shop", false).await;
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let (status, s) = app.create_session(&m.test_key, seed_request()).await;
        assert_eq!(status, 201, "{s}");
        addresses.push(s["pay_address"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        addresses,
        [
            "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
            "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK",
            "TYJPRrdB5APNeRs4R7fYZSwW3TcrTKw2gx"
        ]
    );
    let before = app.count("checkout_sessions").await;
    let (status, body) = app.create_session(&m.live_key, seed_request()).await;
    let e = assert_error(status, &body, 400, "parameter_invalid");
    assert!(
        e["message"].as_str().unwrap().contains("public test xpub"),
        "{e}"
    );
    assert_eq!(app.count("checkout_sessions").await, before);
}

fn bsc_request() -> Value {
    let mut req = seed_request();
    req["network"] = json!("BSC");
    req
}

#[tokio::test]
async fn one_key_under_two_encodings_shares_one_address_counter() {
    use checkout_server::domain::address::PUBLIC_TEST_EVM_XPUB;
    let app = TestApp::spawn().await;
    let demo =
        create_merchant_with_xpubs(&app.db, "Demo Key Shop", None, Some(PUBLIC_TEST_EVM_XPUB))
            .await;
    // The same public key and chain code, with another parent fingerprint and child number.
    let copy = reencoded_xpub(PUBLIC_TEST_EVM_XPUB);
    let other = create_merchant_with_xpubs(&app.db, "Same Key Shop", None, Some(&copy)).await;
    let mut addresses = Vec::new();
    for key in [
        &demo.test_key,
        &other.test_key,
        &other.test_key,
        &demo.test_key,
    ] {
        let (status, s) = app.create_session(key, bsc_request()).await;
        assert_eq!(status, 201, "{s}");
        addresses.push(s["pay_address"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        addresses[..3],
        [
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
            "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0",
            "0xb6716976A3ebe8D39aCEB04372f22Ff8e6802D7A"
        ],
        "one counter for the key, whatever its encoding"
    );
    assert_eq!(addresses.iter().collect::<HashSet<_>>().len(), 4);
    let indexes: Vec<i64> = sqlx::query_scalar(
        "SELECT address_index FROM checkout_sessions ORDER BY created_at, address_index",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(indexes, [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_reencoded_public_test_xpub_is_refused_live() {
    use checkout_server::domain::address::{PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB};
    let app = TestApp::spawn().await;
    let m = create_merchant_with_xpubs(
        &app.db,
        "Disguised Demo Shop",
        Some(&reencoded_xpub(PUBLIC_TEST_TRON_XPUB)),
        Some(&reencoded_xpub(PUBLIC_TEST_EVM_XPUB)),
    )
    .await;
    for req in [seed_request(), bsc_request()] {
        let (status, s) = app.create_session(&m.test_key, req.clone()).await;
        assert_eq!(status, 201, "test mode takes the public keys: {s}");
        let (status, body) = app.create_session(&m.live_key, req).await;
        let e = assert_error(status, &body, 400, "parameter_invalid");
        assert!(
            e["message"].as_str().unwrap().contains("public test xpub"),
            "{e}"
        );
    }
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM checkout_sessions WHERE livemode")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn live_keys_make_live_sessions_and_modes_never_mix() {
    let app = TestApp::spawn().await;
    let (status, live) = app
        .create_session(&app.merchant.live_key, seed_request())
        .await;
    assert_eq!(status, 201, "{live}");
    assert_eq!(live["livemode"], true);
    assert_eq!(
        live["currency_contract"],
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
    );
    let (_, test) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_ne!(live["pay_address"], test["pay_address"]);

    let live_path = format!("/v1/checkout/sessions/{}", live["id"].as_str().unwrap());
    let test_path = format!("/v1/checkout/sessions/{}", test["id"].as_str().unwrap());
    let (status, body) = app.get(&live_path, &app.merchant.test_key).await;
    assert_error(status, &body, 404, "resource_missing");
    let (status, body) = app.get(&test_path, &app.merchant.live_key).await;
    assert_error(status, &body, 404, "resource_missing");
    let (_, list) = app
        .get("/v1/checkout/sessions", &app.merchant.test_key)
        .await;
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(list["data"][0]["id"], test["id"]);

    // Another merchant sees none of it, and cannot expire it.
    let other = app.new_merchant("Other").await;
    let (status, body) = app.get(&test_path, &other.test_key).await;
    assert_error(status, &body, 404, "resource_missing");
    let (status, body) = app
        .request(
            Method::POST,
            &format!("{test_path}/expire"),
            Some(&other.test_key),
            None,
        )
        .await;
    assert_error(status, &body, 404, "resource_missing");
    let (_, list) = app.get("/v1/checkout/sessions", &other.test_key).await;
    assert_eq!(list["meta"]["total"], 0);
    // A network enabled only for test mode is refused live.
    let mut req = seed_request();
    req["network"] = json!("ETHEREUM");
    let (status, body) = app.create_session(&app.merchant.live_key, req).await;
    assert_error(status, &body, 400, "parameter_invalid");
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .request(Method::GET, "/v1/checkout/sessions", None, None)
        .await;
    assert_error(status, &body, 401, "authentication_failed");
    for bad in [
        "sk_test_nope",
        "Basic abc",
        "sk_live_1111111111111111111111111111111111111111111",
    ] {
        let (status, body) = app.get("/v1/checkout/sessions", bad).await;
        assert_error(status, &body, 401, "authentication_failed");
    }
    let res = app
        .client
        .get(format!("{}/v1/checkout/sessions", app.base))
        .header("Authorization", format!("Token {}", app.merchant.test_key))
        .send()
        .await
        .unwrap();
    let (status, body) = read(res).await;
    assert_error(status, &body, 401, "authentication_failed");

    // Revoked through the CLI's service: refused at once.
    checkout_server::service::merchants::revoke_key(&app.db, &app.merchant.test_key)
        .await
        .unwrap();
    let (status, body) = app
        .get("/v1/checkout/sessions", &app.merchant.test_key)
        .await;
    assert_error(status, &body, 401, "authentication_failed");
    let (status, body) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_error(status, &body, 401, "authentication_failed");
    assert_eq!(app.count("checkout_sessions").await, 0);
    // The live key still works.
    let (status, _) = app
        .get("/v1/checkout/sessions", &app.merchant.live_key)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn list_pages_and_filters() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut req = seed_request();
        req["client_reference_id"] = json!(format!("order_{i}"));
        if i % 2 == 1 {
            req["network"] = json!("BSC");
        }
        let (status, s) = app.create_session(key, req).await;
        assert_eq!(status, 201);
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    let (status, page1) = app
        .get("/v1/checkout/sessions?page=1&page_size=3", key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page1["meta"],
        json!({"total": 7, "page": 1, "page_size": 3, "total_pages": 3})
    );
    let (_, page3) = app
        .get("/v1/checkout/sessions?page=3&page_size=3", key)
        .await;
    assert_eq!(page3["data"].as_array().unwrap().len(), 1);
    // Newest first, no overlaps, every id once.
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (_, p) = app
            .get(
                &format!("/v1/checkout/sessions?page={page}&page_size=3"),
                key,
            )
            .await;
        for s in p["data"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
    assert_eq!(seen[0], newest_first[0]);
    let (_, beyond) = app
        .get("/v1/checkout/sessions?page=9&page_size=3", key)
        .await;
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["meta"]["total"], 7);

    let (_, bsc) = app.get("/v1/checkout/sessions?network=bsc", key).await;
    assert_eq!(bsc["meta"]["total"], 3);
    assert!(bsc["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["network"] == "BSC"));
    let (_, by_ref) = app
        .get("/v1/checkout/sessions?client_reference_id=order_4", key)
        .await;
    assert_eq!(by_ref["meta"]["total"], 1);
    assert_eq!(by_ref["data"][0]["id"], ids[4]);

    app.request(
        Method::POST,
        &format!("/v1/checkout/sessions/{}/expire", ids[0]),
        Some(key),
        None,
    )
    .await;
    let (_, expired) = app.get("/v1/checkout/sessions?status=Expired", key).await;
    assert_eq!(expired["meta"]["total"], 1);
    let (_, pending) = app.get("/v1/checkout/sessions?status=Pending", key).await;
    assert_eq!(pending["meta"]["total"], 6);

    let future = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let (_, none) = app
        .get(
            &format!("/v1/checkout/sessions?created_after={future}"),
            key,
        )
        .await;
    assert_eq!(none["meta"]["total"], 0);
    let (_, all) = app
        .get(
            &format!("/v1/checkout/sessions?created_before={future}"),
            key,
        )
        .await;
    assert_eq!(all["meta"]["total"], 7);
    let (_, all) = app
        .get(
            "/v1/checkout/sessions?created_after=2020-01-01T00:00:00Z",
            key,
        )
        .await;
    assert_eq!(all["meta"]["total"], 7);

    for bad in [
        "page=0",
        "page=x",
        "page_size=0",
        "page_size=101",
        "status=paid",
        "network=DOGE",
        "created_after=yesterday",
        "sub_merchant_code=_x",
        "colour=red",
    ] {
        let (status, body) = app.get(&format!("/v1/checkout/sessions?{bad}"), key).await;
        let e = assert_error(status, &body, 400, "parameter_invalid");
        assert!(e["param"].is_string(), "{bad}: {e}");
    }
}

#[tokio::test]
async fn expire_moves_pending_to_expired_once() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let (_, s) = app.create_session(key, seed_request()).await;
    let path = format!("/v1/checkout/sessions/{}/expire", s["id"].as_str().unwrap());
    let (status, expired) = app.request(Method::POST, &path, Some(key), None).await;
    assert_eq!(status, 200, "{expired}");
    assert_eq!(expired["status"], "Expired");
    let (status, body) = app.request(Method::POST, &path, Some(key), None).await;
    assert_error(status, &body, 410, "session_expired");

    // A paid session cannot be expired.
    let (_, s) = app.create_session(key, seed_request()).await;
    sqlx::query(
        "UPDATE checkout_sessions SET status = 'Paid', amount_received = amount WHERE id = $1",
    )
    .bind(s["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    let path = format!("/v1/checkout/sessions/{}/expire", s["id"].as_str().unwrap());
    let (status, body) = app.request(Method::POST, &path, Some(key), None).await;
    assert_error(status, &body, 409, "session_completed");
    let (_, still) = app
        .get(
            &format!("/v1/checkout/sessions/{}", s["id"].as_str().unwrap()),
            key,
        )
        .await;
    assert_eq!(still["status"], "Paid");

    let (status, body) = app
        .request(
            Method::POST,
            "/v1/checkout/sessions/cs_00000000000000000000000000000000/expire",
            Some(key),
            None,
        )
        .await;
    assert_error(status, &body, 404, "resource_missing");
    let (status, body) = app.get("/v1/checkout/sessions/not-an-id", key).await;
    assert_error(status, &body, 404, "resource_missing");
}

#[tokio::test]
async fn concurrent_creates_get_distinct_addresses() {
    let app = TestApp::spawn().await;
    let results = app
        .concurrent_creates(40, &[], |i| {
            let mut req = seed_request();
            if i % 2 == 0 {
                req["network"] = json!("BSC");
            }
            req
        })
        .await;
    let mut addresses = HashSet::new();
    for (status, s) in results {
        assert_eq!(status, 201, "{s}");
        assert!(addresses.insert(s["pay_address"].as_str().unwrap().to_owned()));
    }
    assert_eq!(addresses.len(), 40);
    let indexes: Vec<i64> = sqlx::query_scalar(
        "SELECT address_index FROM checkout_sessions WHERE chain_family = 'evm' ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(indexes, (0..20).collect::<Vec<i64>>());
}

/// Each process reserves indexes a block at a time: two processes never share one, a process
/// that crashes leaves at most the rest of its block unused, and one that stops gracefully hands
/// that rest back when no one reserved after it.
#[tokio::test]
async fn processes_take_disjoint_index_blocks_and_a_restart_leaves_a_bounded_gap() {
    use checkout_server::domain::network::ChainFamily;
    use checkout_server::state::AddressBlocks;
    let app = TestApp::spawn().await;
    let block = AddressBlocks::BLOCK;
    let (a, b) = (AddressBlocks::default(), AddressBlocks::default());
    let db = &app.db;
    let (key_1, key_2) = ("1".repeat(130), "2".repeat(130));
    let next = |blocks| AddressBlocks::next(blocks, db, ChainFamily::Evm, &key_1);
    assert_eq!(next(&a).await.unwrap(), 0);
    assert_eq!(next(&b).await.unwrap(), block);
    assert_eq!(next(&a).await.unwrap(), 1);
    // Another key has its own counter.
    assert_eq!(a.next(&app.db, ChainFamily::Evm, &key_2).await.unwrap(), 0);
    // A restart of `a`: indexes 2..BLOCK are never handed out.
    let a = AddressBlocks::default();
    assert_eq!(next(&a).await.unwrap(), 2 * block);

    // Many at once, in both processes: the rest of both blocks, each index once, with no
    // further reservation.
    let taken: HashSet<i64> = futures_util::future::join_all(
        (0..2 * (block - 1)).map(|i| next(if i % 2 == 0 { &a } else { &b })),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let expected: HashSet<i64> = (block + 1..2 * block)
        .chain(2 * block + 1..3 * block)
        .collect();
    assert_eq!(taken, expected);

    // Graceful stops: `e` reserved last and hands its rest back; `c`'s rest stays a gap.
    let (c, e) = (AddressBlocks::default(), AddressBlocks::default());
    assert_eq!(next(&c).await.unwrap(), 3 * block);
    assert_eq!(next(&e).await.unwrap(), 4 * block);
    c.give_back(db).await;
    e.give_back(db).await;
    let f = AddressBlocks::default();
    assert_eq!(next(&f).await.unwrap(), 4 * block + 1);
    let reserved: i64 = sqlx::query_scalar(
        "SELECT next_index FROM address_allocators WHERE chain_family = 'evm' AND key_id = $1",
    )
    .bind(&key_1)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reserved, 5 * block + 1);
}

#[tokio::test]
async fn sub_merchants_flow() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let body = json!({"sub_merchant_code": "shop_tokyo", "display_name": "Tokyo Shop", "logo_url": "https://example.com/tokyo.png"});
    let (status, sub) = app
        .request(
            Method::POST,
            "/v1/sub-merchants",
            Some(key),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(sub["sub_merchant_code"], "shop_tokyo");
    assert_eq!(sub["status"], "active");
    let (status, dup) = app
        .request(Method::POST, "/v1/sub-merchants", Some(key), Some(body))
        .await;
    assert_error(status, &dup, 409, "resource_already_exists");

    let app_ref = &app;
    let create_under = |code: &'static str| async move {
        app_ref
            .create_session_with(key, &seed_request(), &[("X-Sub-Merchant-Code", code)])
            .await
    };
    let (status, s, _) = create_under("shop_tokyo").await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["sub_merchant_code"], "shop_tokyo");
    assert_eq!(s["merchant_name"], "Tokyo Shop");
    assert_eq!(s["merchant_logo_url"], "https://example.com/tokyo.png");
    app.create_session(key, seed_request()).await;

    let (_, list) = app
        .get("/v1/checkout/sessions?sub_merchant_code=shop_tokyo", key)
        .await;
    assert_eq!(list["meta"]["total"], 1);
    let (_, all) = app.get("/v1/checkout/sessions", key).await;
    assert_eq!(all["meta"]["total"], 2);

    let before = app.count("checkout_sessions").await;
    let (status, body, _) = create_under("shop_osaka").await;
    let e = assert_error(status, &body, 400, "parameter_invalid");
    assert_eq!(e["param"], "X-Sub-Merchant-Code");
    let (status, body, _) = create_under("_bad").await;
    assert_error(status, &body, 400, "parameter_invalid");

    let (status, patched) = app
        .request(
            Method::PATCH,
            "/v1/sub-merchants/shop_tokyo",
            Some(key),
            Some(json!({"status": "suspended", "display_name": "Tokyo"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "suspended");
    assert_eq!(patched["display_name"], "Tokyo");
    let (status, body, _) = create_under("shop_tokyo").await;
    let e = assert_error(status, &body, 400, "parameter_invalid");
    assert_eq!(e["param"], "X-Sub-Merchant-Code");
    assert_eq!(app.count("checkout_sessions").await, before);

    let (status, got) = app.get("/v1/sub-merchants/shop_tokyo", key).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "suspended");
    let (_, list) = app.get("/v1/sub-merchants", key).await;
    assert_eq!(list["meta"]["total"], 1);
    // Another mode and another merchant see nothing.
    let (status, body) = app
        .get("/v1/sub-merchants/shop_tokyo", &app.merchant.live_key)
        .await;
    assert_error(status, &body, 404, "resource_missing");
    let other = app.new_merchant("Other").await;
    let (status, body) = app
        .get("/v1/sub-merchants/shop_tokyo", &other.test_key)
        .await;
    assert_error(status, &body, 404, "resource_missing");
    let (status, body) = app
        .request(
            Method::PATCH,
            "/v1/sub-merchants/shop_tokyo",
            Some(&other.test_key),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_error(status, &body, 404, "resource_missing");
    for bad in [
        json!({"status": "closed"}),
        json!({"display_name": ""}),
        json!({"logo_url": "javascript:alert(1)"}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = app
            .request(
                Method::PATCH,
                "/v1/sub-merchants/shop_tokyo",
                Some(key),
                Some(bad),
            )
            .await;
        assert_error(status, &body, 400, "parameter_invalid");
    }
    let (_, still) = app.get("/v1/sub-merchants/shop_tokyo", key).await;
    assert_eq!(still["display_name"], "Tokyo");
}

#[tokio::test]
async fn health_readiness_and_request_ids() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("request-id").is_some());
    assert_eq!(res.status(), 200);
    let (status, body) = read(
        app.client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["database"], "ok");
    let res = app
        .client
        .get(format!("{}/v1/unknown", app.base))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("request-id").is_some());
    let (status, body) = read(res).await;
    assert_error(status, &body, 404, "resource_missing");
    let (status, body) = app
        .request(
            Method::DELETE,
            "/v1/checkout/sessions",
            Some(&app.merchant.test_key),
            None,
        )
        .await;
    assert_error(status, &body, 405, "method_not_allowed");
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second_though_keys_are_cached() {
    let app = TestApp::spawn().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !app.state.live.listening() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener connects"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let key = app.merchant.test_key.clone();
    // Authenticated once: cached for AUTH_TTL (5 s).
    let (status, _) = app.get("/v1/checkout/sessions", &key).await;
    assert_eq!(status, 200);
    assert_eq!(
        checkout_server::service::live_status::AUTH_TTL,
        std::time::Duration::from_secs(5)
    );
    checkout_server::service::merchants::revoke_key(&app.db, &key)
        .await
        .unwrap();
    // The revocation is announced: refused long before the cache entry would lapse.
    let revoked_at = std::time::Instant::now();
    loop {
        let (status, body) = app.get("/v1/checkout/sessions", &key).await;
        if status == 401 {
            assert_error(status, &body, 401, "authentication_failed");
            break;
        }
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "still accepted a second after its revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, body) = app.create_session(&key, seed_request()).await;
    assert_error(status, &body, 401, "authentication_failed");
}

/// A retrieve reads the session and its transfers in one statement (transfers as JSON), a list
/// in two (transfers as rows): both must show the same transfers, exactly.
#[tokio::test]
async fn a_retrieve_shows_the_transfers_exactly_as_the_list_does() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let (status, s) = app.create_session(key, seed_request()).await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_str().unwrap();
    app.pay(id, "4.123457").await;
    app.pay(id, "6.376543").await; // Paid: 10.5 in all
    app.pay(id, "0.000001").await; // dust: counted, not listed
    app.pay(id, "1.1").await; // late
    let (status, one) = app.get(&format!("/v1/checkout/sessions/{id}"), key).await;
    assert_eq!(status, 200, "{one}");
    let (status, list) = app.get("/v1/checkout/sessions", key).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(one["transactions"], list["data"][0]["transactions"]);
    let amounts: Vec<&str> = one["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["4.123457", "6.376543", "1.1"], "in order, exact");
    assert_eq!(one["transactions"][2]["not_credited_reason"], "late");
    assert_eq!(one["amount_received"], "10.5");
    assert_eq!(one["anomalies"]["dust"], 1);
    assert_eq!(one, list["data"][0], "the whole session alike");
}
