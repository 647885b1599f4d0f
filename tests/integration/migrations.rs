//! Migrations that rewrite existing data, run on a database holding data of the schema before.

use crate::common::*;
use checkout_server::db::MIGRATOR;
use checkout_server::domain::address::{AccountXpub, PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB};
use sqlx::migrate::Migrate;
use sqlx::PgPool;
use uuid::Uuid;

/// A fresh database with the migrations before `version` applied (and recorded, so the real
/// migrator continues from there).
async fn database_before(version: i64) -> PgPool {
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&format!("cstest_{}", Uuid::new_v4().simple()));
    checkout_server::db::ensure_database(url.as_str())
        .await
        .unwrap();
    let pool = checkout_server::db::connect(url.as_str()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    conn.ensure_migrations_table().await.unwrap();
    for migration in MIGRATOR.iter().filter(|m| m.version < version) {
        conn.apply(migration).await.unwrap();
    }
    drop(conn);
    pool
}

fn key_id(xpub: &str) -> String {
    AccountXpub::parse(xpub).unwrap().key_id().to_owned()
}

/// A session row of the old schema on `xpub`'s child `index`.
async fn old_session(db: &PgPool, merchant: Uuid, family: &str, xpub: &str, index: i64) {
    sqlx::query(
        "INSERT INTO checkout_sessions (
            id, merchant_id, livemode, amount, fee_rate, fee_floor, fee_amount, net_amount,
            currency, network, chain_family, currency_contract, token_decimals, pay_address,
            address_xpub, address_index, pricing_amount, pricing_currency, exchange_rate,
            success_url, cancel_url, merchant_name, created_at, expires_at)
         VALUES ('cs_' || md5(random()::text), $1, false, 10, 0, 0, 0, 10, 'USDT',
                 CASE WHEN $2 = 'tron' THEN 'TRON' ELSE 'BSC' END, $2, 'contract', 6,
                 md5(random()::text), $3, $4, 10, 'USD', 1, 'https://example.com/s',
                 'https://example.com/c', 'Shop', now(), now() + interval '30 minutes')",
    )
    .bind(merchant)
    .bind(family)
    .bind(xpub)
    .bind(index)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn key_identity_rekeys_allocators_on_the_key_material_and_merges_encodings() {
    const KEY_IDENTITY: i64 = 20261127000002;
    assert!(
        MIGRATOR.iter().any(|m| m.version == KEY_IDENTITY),
        "the key identity migration exists"
    );
    let db = database_before(KEY_IDENTITY).await;
    let evm_copy = reencoded_xpub(PUBLIC_TEST_EVM_XPUB);
    let tron_copy = reencoded_xpub(PUBLIC_TEST_TRON_XPUB);
    let randoms: Vec<String> = (0..5).map(|_| random_xpub("m/44'/60'/0'")).collect();
    let mut rows: Vec<(&str, &str, i64)> = vec![
        // Two encodings of one key, each with its own counter: merged on the greatest...
        ("evm", PUBLIC_TEST_EVM_XPUB, 5),
        ("evm", &evm_copy, 2),
        // ...unless a session already went further (next: 9, below).
        ("tron", PUBLIC_TEST_TRON_XPUB, 3),
        ("tron", &tron_copy, 4),
        // One key in two families keeps one counter per family.
        ("tron", PUBLIC_TEST_EVM_XPUB, 1),
    ];
    for (i, x) in randoms.iter().enumerate() {
        rows.push(("evm", x, i as i64 + 1));
    }
    for (family, xpub, next) in &rows {
        sqlx::query(
            "INSERT INTO address_allocators (chain_family, xpub, next_index) VALUES ($1, $2, $3)",
        )
        .bind(family)
        .bind(xpub)
        .bind(next)
        .execute(&db)
        .await
        .unwrap();
    }
    let merchant = Uuid::new_v4();
    sqlx::query("INSERT INTO merchants (id, name) VALUES ($1, 'Old Shop')")
        .bind(merchant)
        .execute(&db)
        .await
        .unwrap();
    old_session(&db, merchant, "evm", PUBLIC_TEST_EVM_XPUB, 4).await;
    old_session(&db, merchant, "tron", &tron_copy, 8).await;

    MIGRATOR.run(&db).await.unwrap();

    let mut got: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT chain_family, key_id, next_index FROM address_allocators ORDER BY 1, 2",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut want = vec![
        ("evm".to_owned(), key_id(PUBLIC_TEST_EVM_XPUB), 5),
        ("tron".to_owned(), key_id(PUBLIC_TEST_TRON_XPUB), 9),
        ("tron".to_owned(), key_id(PUBLIC_TEST_EVM_XPUB), 1),
    ];
    for (i, x) in randoms.iter().enumerate() {
        want.push(("evm".to_owned(), key_id(x), i as i64 + 1));
    }
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "the SQL decoding agrees with AccountXpub::key_id"
    );
    assert_eq!(key_id(&evm_copy), key_id(PUBLIC_TEST_EVM_XPUB));

    let helpers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE proname LIKE '%xpub%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(helpers, 0, "the migration's decoding function is dropped");
    // The merged counter carries on.
    let next = checkout_server::db::sessions::allocate_address_indexes(
        &db,
        checkout_server::domain::network::ChainFamily::Tron,
        &key_id(&tron_copy),
        1,
    )
    .await
    .unwrap();
    assert_eq!(next, 9);
}
