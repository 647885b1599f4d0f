//! The API's throughput against what Postgres itself allows, and the idle cost of open
//! live-status streams. One run prints one table:
//!
//! - create (with and without `Idempotency-Key`) and retrieve at 1, 8 and 32 clients, driven by
//!   `wrk`: req/s, p50, p99;
//! - the same writes and read through `pgbench -M prepared` (the floor), and the ratio;
//! - the same read through a bare axum + sqlx handler in this process (no authentication, no
//!   layers, the row as `to_jsonb` text): what the stack alone costs, told apart from ours
//!   (`BENCH_ROWS=healthz,bare_healthz`: our `GET /healthz` beside the bare router's, the
//!   layers' cost without the database);
//! - 10,000 open streams: the CPU the server and Postgres spend over 10 s while nothing
//!   happens, and how long one status change per session takes to reach every stream;
//! - the server's peak RSS, with 100,000 more open sessions on BSC (a local anvil chain) that
//!   the watcher scans for meanwhile.
//!
//! The server is the release binary in its own process, on a fresh database, with one
//! merchant (the worst case: every create takes an index of the same TRON key).
//! `scripts/bench` installs `wrk` and anvil and runs this (`cargo bench --bench api`). Settings:
//! BENCH_DATABASE_URL (an admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
//! BENCH_SECONDS (per load run, default 10), BENCH_STREAMS (default 10000), BENCH_LOAD=0 (the
//! streams only), BENCH_ROWS (default create,create_key,retrieve,bare), BENCH_CLIENTS (default 1,8,32),
//! BENCH_OPEN_SESSIONS (default 100000).

use anyhow::{bail, Context};
use checkout_server::domain::address::{PUBLIC_TEST_EVM_XPUB, PUBLIC_TEST_TRON_XPUB};
use checkout_server::service::merchants::{self, MerchantSpec};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TRON simulated (payments by the test helper); BSC read from anvil by a real watcher, for
/// the open sessions it watches. The token contract has no code: no transfers, only the scans.
/// `scan = "auto"`, as the README advises when thousands of addresses are watched.
const CONFIG: &str = r#"
[networks.TRON.test]
simulated = true
[networks.BSC.test]
rpc_urls = ["{anvil}"]
chain_id = 31337
poll_interval_ms = 1000
scan = "auto"
tokens.USDT = { contract = "0x55d398326f99059fF775485246999027B3197955", decimals = 18 }
[rates]
source = "static"
# The benchmark measures the server, not its limits.
[rate_limits]
test_per_second = 1000000
test_burst = 1000000
ip_per_second = 1000000
ip_burst = 1000000
ip_streams = 1000000
[http]
max_connections = 100000
max_connections_per_ip = 100000
"#;

const CREATE_BODY: &str = r#"{"pricing_amount":"10.50","pricing_currency":"USDT","currency":"USDT","network":"TRON","success_url":"https://shop.example/ok","cancel_url":"https://shop.example/cancel"}"#;

struct Load {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let seconds: u64 = env_number("BENCH_SECONDS", 10);
    let streams: usize = env_number("BENCH_STREAMS", 10_000);
    for tool in ["wrk", "pgbench"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} is not installed: run scripts/bench, which installs it");
        }
    }
    if let Some(limit) = open_files_limit() {
        if limit < streams as u64 + 1000 {
            bail!("{limit} open files allowed; {streams} streams need more: run `ulimit -n 65536` first (scripts/bench does)");
        }
    }

    let name = "checkout_bench";
    let mut url = url::Url::parse(&admin)?;
    let admin_pool = checkout_server::db::connect(&admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await?;
    url.set_path(name);
    let db = checkout_server::db::prepare(url.as_str()).await?;
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

    let anvil = Anvil::start().await?;
    let addr = free_address()?;
    let mut server = Server::start(url.as_str(), addr, &CONFIG.replace("{anvil}", &anvil.url))?;
    let base = format!("http://{addr}");
    wait_ready(&base).await?;
    let client = reqwest::Client::new();
    let session = create_session(&client, &base, &key, CREATE_BODY).await?;

    let dir = tempdir()?;
    let lua = |name: &str, text: String| -> anyhow::Result<String> {
        let path = format!("{dir}/{name}.lua");
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let auth = format!("wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n");
    let create = lua(
        "create",
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{CREATE_BODY}'\n{auth}wrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let create_idem = lua(
        "create_idem",
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{CREATE_BODY}'\n{auth}wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local n = 0\nlocal threads = 0\nlocal prefix = \"\"\n\
             function setup(thread) threads = threads + 1; thread:set(\"tid\", threads) end\n\
             function init(args) prefix = args[1] .. \"-\" .. tid end\n\
             request = function()\n  n = n + 1\n  wrk.headers[\"Idempotency-Key\"] = prefix .. \"-\" .. n\n  return wrk.format()\nend\n"
        ),
    )?;
    let retrieve = lua("retrieve", auth.clone())?;

    let floors = Floors::prepare(&db, &dir).await?;
    let sessions_url = format!("{base}/v1/checkout/sessions");
    let retrieve_url = format!("{sessions_url}/{session}");

    println!(
        "\nAPI throughput: server (release), Postgres, wrk and pgbench on one machine, {} cores; {seconds} s a run",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "\n| | clients | req/s | p50 ms | p99 ms | floor tps (pgbench) | floor p50 / p99 ms | ratio |\n|---|---|---|---|---|---|---|---|"
    );
    let load_runs: Vec<usize> = if std::env::var("BENCH_LOAD").is_ok_and(|v| v == "0") {
        Vec::new()
    } else {
        env_list("BENCH_CLIENTS", "1,8,32")
            .iter()
            .map(|n| n.parse().context("BENCH_CLIENTS: numbers"))
            .collect::<anyhow::Result<_>>()?
    };
    let bare = serve_bare(url.as_str()).await?;
    let bare_url = format!("http://{bare}/{session}");
    let healthz_url = format!("{base}/healthz");
    let bare_healthz_url = format!("http://{bare}/healthz");
    let plain = lua("plain", String::new())?;
    let wanted = env_list("BENCH_ROWS", "create,create_key,retrieve,bare");
    for &clients in &load_runs {
        let rows = [
            (
                "create",
                "create",
                &create,
                &sessions_url,
                Some(&floors.write),
            ),
            (
                "create_key",
                "create + Idempotency-Key",
                &create_idem,
                &sessions_url,
                Some(&floors.write),
            ),
            (
                "retrieve",
                "retrieve",
                &retrieve,
                &retrieve_url,
                Some(&floors.read),
            ),
            (
                "bare",
                "retrieve, bare axum + sqlx",
                &plain,
                &bare_url,
                Some(&floors.read),
            ),
            // Only when asked for: what our layers cost a request, without the database.
            ("healthz", "GET /healthz", &plain, &healthz_url, None),
            (
                "bare_healthz",
                "GET /healthz, bare axum",
                &plain,
                &bare_healthz_url,
                None,
            ),
        ];
        let rows = rows
            .into_iter()
            .filter(|(name, ..)| wanted.iter().any(|w| w == name));
        for (_, label, script, target, floor_script) in rows {
            // Off the runtime's workers, which serve the bare handler meanwhile.
            let load = tokio::task::block_in_place(|| wrk(script, target, clients, seconds))?;
            let floor = match floor_script {
                Some(floor_script) => Some(tokio::task::block_in_place(|| {
                    pgbench(url.as_str(), floor_script, clients, seconds)
                })?),
                None => None,
            };
            let (floor_rate, floor_latency, ratio) = match floor {
                Some(floor) => (
                    format!("{:.0}", floor.per_second),
                    format!("{:.1} / {:.1}", floor.p50_ms, floor.p99_ms),
                    format!("{:.2}", load.per_second / floor.per_second),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            println!(
                "| {label} | {clients} | {:.0} | {:.1} | {:.1} | {floor_rate} | {floor_latency} | {ratio} |",
                load.per_second, load.p50_ms, load.p99_ms,
            );
        }
    }

    let open = env_number("BENCH_OPEN_SESSIONS", 100_000);
    let bsc_body = CREATE_BODY.replace("\"TRON\"", "\"BSC\"");
    let bsc_session = create_session(&client, &base, &key, &bsc_body).await?;
    add_open_sessions(&db, &bsc_session, open).await?;
    let scanned_before = scanned_block(&db).await?;
    if streams > 0 {
        streams_run(&client, &base, &key, &mut server, streams).await?;
    }
    let scanned_after = scanned_block(&db).await?;
    println!(
        "{} open sessions on BSC (anvil), watched meanwhile: the watcher scanned from block {} to {}",
        open + 1,
        scanned_before.map_or("(none)".into(), |b| b.to_string()),
        scanned_after.map_or("(none)".into(), |b| b.to_string()),
    );
    println!(
        "\nserver peak RSS over the whole run: {:.0} MB",
        server.rss_kib("VmHWM")? as f64 / 1024.0
    );

    server.stop();
    db.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await?;
    Ok(())
}

/// 10,000 streams on 100 sessions: the idle CPU of the server and Postgres over 10 s, then one
/// payment per session and the time until every stream has seen it.
async fn streams_run(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    server: &mut Server,
    streams: usize,
) -> anyhow::Result<()> {
    let sessions_count = 100.min(streams);
    let mut sessions = Vec::new();
    for _ in 0..sessions_count {
        sessions.push(create_session(client, base, key, CREATE_BODY).await?);
    }
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let opened = Arc::new(AtomicUsize::new(0));
    let paid = Arc::new(AtomicUsize::new(0));
    // When each stream saw Paid, by session.
    let seen: Arc<std::sync::Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let session = i % sessions_count;
        let id = sessions[session].clone();
        let (opened, paid, seen) = (opened.clone(), paid.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            match watch_stream(addr, &id, &opened, &paid).await {
                Ok(at) => seen.lock().unwrap().push((session, at)),
                Err(e) => eprintln!("stream {i}: {e:#}"),
            }
        }));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < streams {
        if Instant::now() > deadline {
            bail!(
                "only {} of {streams} streams opened",
                opened.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the opening burst settle, then measure a quiet stretch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(10);
    let (server_before, pg_before) = (server.cpu_seconds()?, postgres_cpu_seconds()?);
    tokio::time::sleep(window).await;
    let (server_after, pg_after) = (server.cpu_seconds()?, postgres_cpu_seconds()?);
    let server_share = (server_after - server_before) / window.as_secs_f64() * 100.0;
    let pg_share = (pg_after - pg_before) / window.as_secs_f64() * 100.0;
    let (allocated, resident) = server.heap_mb().await?;
    println!(
        "\n{streams} open live-status streams on {sessions_count} sessions, idle for {} s: server {server_share:.1} % of one core, Postgres {pg_share:.1} %, together {:.1} %; server RSS {:.0} MB (heap: {allocated:.0} MB allocated, {resident:.0} MB resident)",
        window.as_secs(),
        server_share + pg_share,
        server.rss_kib("VmRSS")? as f64 / 1024.0
    );

    // One payment per session, all at once; each session's delay is from its payment's answer
    // (the change committed) to the last of its streams seeing it.
    let started = Instant::now();
    let pays: Vec<_> = sessions
        .iter()
        .map(|id| {
            let (client, base, key) = (client.clone(), base.to_owned(), key.to_owned());
            let url = format!("{base}/v1/test_helpers/checkout/sessions/{id}/simulate_payment");
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&serde_json::json!({ "amount": "10.5" }))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map(|_| Instant::now())
            })
        })
        .collect();
    let mut paid_at = Vec::new();
    for pay in pays {
        paid_at.push(pay.await??);
    }
    let deadline = started + Duration::from_secs(60);
    while paid.load(Ordering::Relaxed) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let mut delays: Vec<Duration> = seen
        .iter()
        .map(|(session, at)| at.saturating_duration_since(paid_at[*session]))
        .collect();
    delays.sort();
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "one payment on each of the {sessions_count} sessions at once: {} of {streams} streams saw Paid; after the payment's answer: p50 {:.0} ms, p99 {:.0} ms, slowest {:.0} ms",
        seen.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        at(1.0).as_secs_f64() * 1000.0,
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The last block the BSC watcher has scanned.
async fn scanned_block(db: &sqlx::PgPool) -> anyhow::Result<Option<i64>> {
    let block: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT block_number FROM chain_cursors WHERE network = 'BSC' AND NOT livemode",
    )
    .fetch_optional(db)
    .await?;
    Ok(block.flatten())
}

/// anvil from `tests/chain` (`scripts/bench` installs it), mining a block a second.
struct Anvil {
    child: Child,
    url: String,
}

impl Anvil {
    async fn start() -> anyhow::Result<Self> {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        if !bin.exists() {
            bail!(
                "{} is missing: run scripts/bench, which installs it",
                bin.display()
            );
        }
        let port = free_address()?.port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", "31337", "--block-time", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting anvil")?;
        let anvil = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let ask =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
        for _ in 0..100 {
            if client.post(&anvil.url).json(&ask).send().await.is_ok() {
                return Ok(anvil);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("anvil did not answer on {}", anvil.url)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` more open sessions, copies of `template` with their own ids, addresses and
/// indexes, written straight to the database: the load of a busy store's open orders.
async fn add_open_sessions(db: &sqlx::PgPool, template: &str, count: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO checkout_sessions (id, merchant_id, livemode, amount, fee_rate, fee_floor,
             fee_amount, net_amount, currency, network, chain_family, currency_contract,
             token_decimals, pay_address, address_xpub, address_index, pricing_amount,
             pricing_currency, exchange_rate, success_url, cancel_url, merchant_name, created_at,
             expires_at, updated_at)
         SELECT 'cs_' || md5('open' || g), merchant_id, livemode, amount, fee_rate, fee_floor,
                fee_amount, net_amount, currency, network, chain_family, currency_contract,
                token_decimals, '0x' || left(md5('address' || g) || md5('more' || g), 40), address_xpub,
                1000000000 + g, pricing_amount, pricing_currency, exchange_rate, success_url,
                cancel_url, merchant_name, now(), now() + interval '1 day', now()
           FROM checkout_sessions, generate_series(1, $2) AS g
          WHERE id = $1",
    )
    .bind(template)
    .bind(count)
    .execute(db)
    .await
    .context("adding open sessions")?;
    Ok(())
}

/// Reads one session's live-status stream until it says `Paid`; returns when it did.
async fn watch_stream(
    addr: SocketAddr,
    id: &str,
    opened: &AtomicUsize,
    paid: &AtomicUsize,
) -> anyhow::Result<Instant> {
    // 10,000 connections at once can overflow the listen backlog: try again.
    let mut tries = 0;
    let mut socket = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(socket) => break socket,
            Err(e) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                let _ = e;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let request = format!(
        "GET /v1/checkout/sessions/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let mut counted_open = false;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!("closed");
        }
        seen.extend_from_slice(&buf[..n]);
        if !counted_open && seen.windows(14).any(|w| w == b"event: session") {
            counted_open = true;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        if seen.windows(15).any(|w| w == b"\"status\":\"Paid\"") {
            paid.fetch_add(1, Ordering::Relaxed);
            return Ok(Instant::now());
        }
        if seen.len() > 64 * 1024 {
            seen.drain(..seen.len() - 1024);
        }
    }
}

/// The retrieve's read with nothing of ours around it: axum's router, one pooled sqlx query
/// (the server's pool settings), the row as JSON text. Its ratio is the stack's own ceiling.
async fn serve_bare(database_url: &str) -> anyhow::Result<SocketAddr> {
    use axum::extract::{Path, State};
    async fn retrieve(
        State(db): State<sqlx::PgPool>,
        Path(id): Path<String>,
    ) -> Result<([(axum::http::HeaderName, &'static str); 1], String), axum::http::StatusCode> {
        sqlx::query_scalar("SELECT to_jsonb(s)::text FROM checkout_sessions s WHERE id = $1")
            .bind(id)
            .fetch_optional(&db)
            .await
            .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?
            .map(|json| {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json,
                )
            })
            .ok_or(axum::http::StatusCode::NOT_FOUND)
    }
    let db = checkout_server::db::connect(database_url).await?;
    let app = axum::Router::new()
        .route("/{id}", axum::routing::get(retrieve))
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .with_state(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// pgbench scripts that do what a create and a retrieve write and read.
struct Floors {
    write: String,
    read: String,
}

impl Floors {
    async fn prepare(db: &sqlx::PgPool, dir: &str) -> anyhow::Result<Self> {
        // Copies of the two tables with the same indexes, so the floor pays what we pay.
        for statement in [
            "CREATE TABLE floor_keys (LIKE idempotency_keys INCLUDING ALL)",
            "CREATE TABLE floor_sessions (LIKE checkout_sessions INCLUDING ALL)",
        ] {
            sqlx::query(statement).execute(db).await?;
        }
        let session: (String, uuid::Uuid) =
            sqlx::query_as("SELECT id, merchant_id FROM checkout_sessions LIMIT 1")
                .fetch_one(db)
                .await?;
        let write = format!("{dir}/floor_write.sql");
        std::fs::write(
            &write,
            format!(
                "\\set n random(1, 9000000000000000000)\n\
BEGIN;\n\
INSERT INTO floor_keys (merchant_id, livemode, key, request_hash, state, owner, locked_at) VALUES ('{m}', false, :client_id || '-' || :n, sha256(:n::text::bytea), 'running', gen_random_uuid(), now());\n\
INSERT INTO floor_sessions (id, merchant_id, livemode, amount, fee_rate, fee_floor, fee_amount, net_amount, currency, network, chain_family, currency_contract, token_decimals, pay_address, address_xpub, address_index, pricing_amount, pricing_currency, exchange_rate, success_url, cancel_url, merchant_name, created_at, expires_at, updated_at) VALUES ('cs_' || md5(random()::text), '{m}', false, 10.5, 0.005, 1, 1, 9.5, 'USDT', 'TRON', 'tron', 'TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t', 6, 'T' || md5(random()::text), 'xpub', :n, 10.5, 'USDT', 1, 'https://shop.example/ok', 'https://shop.example/cancel', 'Bench Store', now(), now() + interval '30 minutes', now());\n\
UPDATE floor_keys SET state = 'done', response_status = 201, response_body = '\\x00' WHERE merchant_id = '{m}' AND livemode = false AND key = :client_id || '-' || :n;\n\
END;\n",
                m = session.1
            ),
        )?;
        let read = format!("{dir}/floor_read.sql");
        std::fs::write(
            &read,
            format!(
                "SELECT * FROM checkout_sessions WHERE id = '{}';\n",
                session.0
            ),
        )?;
        Ok(Self { write, read })
    }
}

fn wrk(script: &str, url: &str, clients: usize, seconds: u64) -> anyhow::Result<Load> {
    let threads = clients.min(2);
    let out = Command::new("wrk")
        .args(["--latency", "-s", script])
        .arg(format!("-t{threads}"))
        .arg(format!("-c{clients}"))
        .arg(format!("-d{seconds}s"))
        .arg(url)
        // Idempotency keys differ from run to run.
        .args(["--", &format!("{clients}-{}", std::process::id())])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw error answers:\n{text}");
    }
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no '{prefix}' in wrk's output:\n{text}"))
    };
    Ok(Load {
        per_second: field("Requests/sec:")?.parse()?,
        p50_ms: wrk_ms(field("50%")?)?,
        p99_ms: wrk_ms(field("99%")?)?,
    })
}

/// wrk's latency text (`812.00us`, `6.80ms`, `1.02s`) in milliseconds.
fn wrk_ms(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("latency unit")?;
    let value: f64 = text[..split].parse()?;
    Ok(match &text[split..] {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        unit => bail!("unknown latency unit {unit}"),
    })
}

/// pgbench's rate, and its latencies from the per-transaction log (`--log`), in one run.
fn pgbench(url: &str, script: &str, clients: usize, seconds: u64) -> anyhow::Result<Load> {
    let logs = std::env::temp_dir().join(format!("checkout-bench-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f", script, "--log"])
        .arg(format!("--log-prefix={}/tx", logs.display()))
        .arg(format!("-c{clients}"))
        .arg(format!("-j{}", clients.min(2)))
        .arg(format!("-T{seconds}"))
        .arg(url)
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let per_second = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| {
            format!(
                "no tps in pgbench's output:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    // One line a transaction: client, number, latency in µs, …
    let mut micros = Vec::new();
    for file in std::fs::read_dir(&logs)? {
        let path = file?.path();
        for line in std::fs::read_to_string(&path)?.lines() {
            let latency = line.split_whitespace().nth(2).context("pgbench log line")?;
            micros.push(latency.parse::<u64>()?);
        }
        std::fs::remove_file(path)?;
    }
    std::fs::remove_dir(&logs)?;
    micros.sort_unstable();
    let percentile = |p: usize| -> anyhow::Result<f64> {
        let at = (micros.len() * p / 100).min(micros.len().saturating_sub(1));
        Ok(*micros.get(at).context("pgbench logged no transaction")? as f64 / 1000.0)
    };
    Ok(Load {
        per_second,
        p50_ms: percentile(50)?,
        p99_ms: percentile(99)?,
    })
}

/// The server's process, with its config file.
struct Server {
    child: Child,
    config: String,
    metrics: SocketAddr,
}

impl Server {
    fn start(database_url: &str, addr: SocketAddr, config_text: &str) -> anyhow::Result<Self> {
        let config = format!(
            "{}/checkout-bench-{}.toml",
            std::env::temp_dir().display(),
            addr.port()
        );
        std::fs::File::create(&config)?.write_all(config_text.as_bytes())?;
        let metrics = free_address()?;
        let child = Command::new(env!("CARGO_BIN_EXE_checkout-server"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("BIND_ADDR", addr.to_string())
            .env("METRICS_ADDR", metrics.to_string())
            .env("CHECKOUT_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the server")?;
        Ok(Self {
            child,
            config,
            metrics,
        })
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.child.id())
    }

    /// `VmRSS` (now) or `VmHWM` (the peak) from the process's status.
    /// The allocator's view from `/metrics`: MB allocated, MB it keeps resident.
    async fn heap_mb(&self) -> anyhow::Result<(f64, f64)> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await?
            .text()
            .await?;
        let gauge = |name: &str| -> anyhow::Result<f64> {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in the metrics"))?;
            Ok(value.parse::<f64>()? / 1e6)
        };
        Ok((
            gauge("checkout_heap_allocated_bytes")?,
            gauge("checkout_heap_resident_bytes")?,
        ))
    }

    fn rss_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmHWM")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Every `postgres` process's CPU time (the server and its backends).
fn postgres_cpu_seconds() -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += process_cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    Ok(total)
}

async fn create_session(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &str,
) -> anyhow::Result<String> {
    let body: serde_json::Value = client
        .post(format!("{base}/v1/checkout/sessions"))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .context("no session id")
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn tempdir() -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("checkout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.display().to_string())
}

/// A comma-separated setting, e.g. `BENCH_ROWS=retrieve BENCH_CLIENTS=8`.
fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soft limit on open files: 10,000 streams need one descriptor each here and in the
/// server (which inherits the limit). `scripts/bench` raises it.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
