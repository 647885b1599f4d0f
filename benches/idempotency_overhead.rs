//! What `Idempotency-Key` costs on `POST /v1/checkout/sessions`: the same creates over real
//! HTTP against a real Postgres, without the header and with a fresh key each, sequential and
//! concurrent. Prints latency percentiles, throughput and the difference.
//!
//! `cargo bench --bench idempotency_overhead` (BENCH_DATABASE_URL: an admin URL, default
//! postgres://postgres@127.0.0.1:5432/postgres; BENCH_REQUESTS: per run, default 2000).

use checkout_server::config::Config;
use checkout_server::domain::address::{PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB};
use checkout_server::service::merchants::{self, MerchantSpec};
use checkout_server::startup::Application;
use checkout_server::state::AppState;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[rates]
source = "static"
[networks.TRON.test]
simulated = true
# The benchmark measures the server, not the limiter: one test key would be held to 25/s.
[rate_limits]
test_per_second = 1000000
test_burst = 1000000
"#;

struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[rank]
    }
    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    requests: usize,
    concurrency: usize,
    idempotency_prefix: Option<&str>,
) -> Run {
    let started = Instant::now();
    let per_worker = requests / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, url, key) = (client.clone(), url.to_owned(), key.to_owned());
            let prefix = idempotency_prefix.map(str::to_owned);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                for i in 0..per_worker {
                    let body = json!({
                        "pricing_amount": "10.50", "pricing_currency": "USDT",
                        "currency": "USDT", "network": "TRON",
                        "success_url": "https://shop.example/ok",
                        "cancel_url": "https://shop.example/cancel",
                    });
                    let mut req = client.post(&url).bearer_auth(&key).json(&body);
                    if let Some(prefix) = &prefix {
                        req = req.header("Idempotency-Key", format!("{prefix}-{w}-{i}"));
                    }
                    let t = Instant::now();
                    let res = req.send().await.expect("request");
                    assert_eq!(
                        res.status(),
                        201,
                        "{}",
                        res.text().await.unwrap_or_default()
                    );
                    res.bytes().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    Run {
        latencies,
        wall: started.elapsed(),
    }
}

/// The raw Postgres baseline: one autocommitted single-row INSERT per round trip, sequential.
async fn raw_insert_round_trip(db: &sqlx::PgPool, n: usize) -> anyhow::Result<Duration> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (k text PRIMARY KEY, at timestamptz)")
        .execute(db)
        .await?;
    let started = Instant::now();
    for i in 0..n {
        sqlx::query("INSERT INTO bench_raw VALUES ($1, now())")
            .bind(format!("raw-{i}"))
            .execute(db)
            .await?;
    }
    Ok(started.elapsed() / n as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(label: &str, without: &Run, with: &Run, raw: Duration) {
    println!("{label}");
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>10}",
        "", "mean ms", "p50 ms", "p99 ms", "req/s"
    );
    for (name, r) in [("without header", without), ("with Idempotency-Key", with)] {
        println!(
            "  {:<22} {:>9.3} {:>9.3} {:>9.3} {:>10.0}",
            name,
            ms(r.mean()),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            r.per_second()
        );
    }
    println!(
        "  overhead: {:+.3} ms mean, {:+.3} ms p50, throughput ×{:.2}",
        ms(with.mean()) - ms(without.mean()),
        ms(with.percentile(0.5)) - ms(without.percentile(0.5)),
        with.per_second() / without.per_second()
    );
    println!(
        "  = {:.2} raw INSERT round trips (mean), vs a bare create of {:.2}",
        (ms(with.mean()) - ms(without.mean())) / ms(raw),
        ms(without.mean()) / ms(raw)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let name = format!("csbench_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(&admin)?;
    url.set_path(&name);
    let db = checkout_server::db::prepare(url.as_str()).await?;
    let mut config = Config::from_toml(CONFIG)?;
    config.database_url = url.to_string();
    let merchant = merchants::create(
        &db,
        &MerchantSpec {
            name: "Bench Store".into(),
            logo_url: None,
            tron_xpub: Some(PUBLIC_TEST_TRON_XPUB.into()),
            evm_xpub: Some(PUBLIC_TEST_EVM_XPUB.into()),
            fee_rate: None,
        },
    )
    .await?;
    let key = merchant.test_key.expose_secret().to_owned();
    let app = Application::bind(AppState::new(db.clone(), config), "127.0.0.1:0".parse()?).await?;
    let endpoint = format!("http://{}/v1/checkout/sessions", app.local_addr());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::new();

    run(&client, &endpoint, &key, 200, 4, None).await;
    run(&client, &endpoint, &key, 200, 4, Some("warm")).await;
    let raw = raw_insert_round_trip(&db, requests).await?;
    println!(
        "raw Postgres baseline: one single-row INSERT = {:.3} ms",
        ms(raw)
    );
    println!(
        "POST /v1/checkout/sessions, {requests} requests per run, Postgres on {}",
        url.host_str().unwrap_or("?")
    );
    for concurrency in [1, 16] {
        // Interleave the two variants so drift (autovacuum, a busy machine) hits both alike.
        let without = run(&client, &endpoint, &key, requests, concurrency, None).await;
        let with = run(
            &client,
            &endpoint,
            &key,
            requests,
            concurrency,
            Some(&format!("c{concurrency}")),
        )
        .await;
        report(&format!("concurrency {concurrency}:"), &without, &with, raw);
    }

    shutdown.cancel();
    let _ = server.await;
    db.close().await;
    let admin_pool = checkout_server::db::connect(&admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await?;
    Ok(())
}
