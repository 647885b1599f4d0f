//! The operator's command-line interface: JSON on stdout, one clear line on failure.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_checkout-server");

fn cli(db_url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", db_url)
        .env_remove("CHECKOUT_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout is not JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test]
async fn merchant_and_key_commands_print_json() {
    let db = fresh_database().await;
    let m = json_out(&cli(
        &db,
        &[
            "merchant",
            "create",
            "--name",
            "Acme Store",
            "--logo-url",
            "https://example.com/l.png",
            "--fee-rate",
            "0.01",
        ],
    ));
    assert_eq!(m["name"], "Acme Store");
    assert!(m["id"].as_str().unwrap().len() == 36);
    assert!(m["test_key"].as_str().unwrap().starts_with("sk_test_"));
    assert!(m["live_key"].as_str().unwrap().starts_with("sk_live_"));

    let k = json_out(&cli(
        &db,
        &[
            "api-key",
            "create",
            "--merchant",
            m["id"].as_str().unwrap(),
            "--mode",
            "live",
        ],
    ));
    let key = k["key"].as_str().unwrap();
    assert!(key.starts_with("sk_live_"));
    let pool = checkout_server::db::connect(&db).await.unwrap();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key_prefix FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|p| p.len() == 12),
        "only a short prefix is stored: {keys:?}"
    );

    assert_eq!(
        json_out(&cli(&db, &["api-key", "revoke", "--key", key]))["revoked"],
        true
    );
    let err = one_line_error(&cli(&db, &["api-key", "revoke", "--key", key]));
    assert!(err.contains("--key"), "{err}");

    let err = one_line_error(&cli(
        &db,
        &[
            "merchant",
            "create",
            "--name",
            "X",
            "--evm-xpub",
            "xpub-nonsense",
        ],
    ));
    assert!(err.contains("--evm-xpub"), "{err}");
    // A valid xpub of the wrong level (here the external chain, m/44'/60'/0'/0) is refused
    // by name, with the level it must have.
    let err = one_line_error(&cli(
        &db,
        &[
            "merchant",
            "create",
            "--name",
            "X",
            "--tron-xpub",
            &random_xpub("m/44'/195'/0'/0"),
        ],
    ));
    assert!(
        err.contains("--tron-xpub") && err.contains("account-level") && err.contains("depth 4"),
        "{err}"
    );
    let err = one_line_error(&cli(
        &db,
        &["merchant", "create", "--name", "X", "--fee-rate", "1.5"],
    ));
    assert!(err.contains("--fee-rate"), "{err}");
    let err = one_line_error(&cli(
        &db,
        &[
            "api-key",
            "create",
            "--merchant",
            "00000000-0000-0000-0000-000000000000",
            "--mode",
            "test",
        ],
    ));
    assert!(err.contains("--merchant"), "{err}");
    let merchants: i64 = sqlx::query_scalar("SELECT count(*) FROM merchants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(merchants, 1);
}

#[test]
fn a_bad_config_stops_start_up_with_one_line_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("cs-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let too_shallow = format!("[wallets]\nevm_xpub = \"{}\"\n", random_xpub("m/44'/60'"));
    for (text, key) in [
        ("[networks.DOGE.test]\nsimulated = true\n", "networks.DOGE"),
        ("[wallets]\ntron_xpub = \"xpub-bad\"\n", "wallets.tron_xpub"),
        (
            too_shallow.as_str(),
            "wallets.evm_xpub: must be an account-level xpub",
        ),
        (
            "[networks.BSC.live]\nrpc_urls = [\"ftp://x\"]\n",
            "networks.BSC.live.rpc_urls[0]",
        ),
        (
            "[networks.BSC.test]\ntokens.USDT = { contract = \"0x1234\" }\n",
            "networks.BSC.test.tokens.USDT.contract",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["serve"])
            .env("CHECKOUT_CONFIG", &path)
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = one_line_error(&out);
        assert!(err.contains(key), "{err} should name {key}");
    }
    let out = Command::new(BIN)
        .args(["serve"])
        .env("CHECKOUT_BASE_URL", "javascript:x")
        .output()
        .unwrap();
    assert!(one_line_error(&out).contains("CHECKOUT_BASE_URL"));
}

/// Starts `serve --demo` in `dir`; returns the child, the key and the curl URL it printed.
fn start_demo(dir: &std::path::Path, db: &str) -> (std::process::Child, String, String) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--demo"])
        .env("DATABASE_URL", db)
        .env("BIND_ADDR", "127.0.0.1:0");
    spawn_demo(command, dir)
}

fn spawn_demo(
    mut command: Command,
    dir: &std::path::Path,
) -> (std::process::Child, String, String) {
    let mut child = command
        .current_dir(dir)
        .env_remove("CHECKOUT_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut key, mut url) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while key.is_none() || url.is_none() {
        assert!(Instant::now() < deadline, "demo output did not appear");
        let line = lines.next().expect("demo output").unwrap();
        if let Some(k) = line.strip_prefix("Test key: ") {
            key = Some(k.trim().to_owned());
        }
        if let Some(u) = line.strip_prefix("curl -s ") {
            url = Some(u.trim_end_matches(" \\").trim().to_owned());
        }
    }
    // Keep the pipe open and drained for the rest of the child's life.
    std::thread::spawn(move || for _ in lines {});
    (child, key.unwrap(), url.unwrap())
}

#[tokio::test]
async fn serve_demo_prints_a_working_key_and_reuses_it() {
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("cs-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, key, url) = start_demo(&dir, &db);
    assert!(key.starts_with("sk_test_"));
    let client = reqwest::Client::new();
    let res = client
        .post(&url)
        .bearer_auth(&key)
        .json(&seed_request())
        .send()
        .await
        .unwrap();
    let (status, s) = read(res).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["merchant_name"], "Demo Store");
    assert_eq!(
        s["pay_address"], "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
        "the public test xpub, index 0"
    );
    let mut bsc = seed_request();
    bsc["network"] = serde_json::json!("BSC");
    let (status, s) = read(
        client
            .post(&url)
            .bearer_auth(&key)
            .json(&bsc)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A restart reuses the merchant and the key.
    let (mut child, key2, url2) = start_demo(&dir, &db);
    assert_eq!(key, key2);
    // A fresh client: no pooled connection to the stopped server.
    let client = reqwest::Client::new();
    let (status, _) = read(
        client
            .post(&url2)
            .bearer_auth(&key2)
            .json(&seed_request())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    child.kill().unwrap();
    child.wait().unwrap();
    let pool = checkout_server::db::connect(&db).await.unwrap();
    let merchants: i64 = sqlx::query_scalar("SELECT count(*) FROM merchants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(merchants, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `serve --demo` where nothing answers on the default URL: run in a fresh network namespace
/// (only loopback, so the machine's PostgreSQL on :5432 is out of reach), it must start a
/// private PostgreSQL under ./.data/, serve with it, stop it on exit and reuse it on restart.
#[test]
fn serve_demo_without_postgres_runs_a_private_one_under_dot_data() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !(is_root && have("unshare") && have("nsenter") && have("curl") && have("ip")) {
        eprintln!("skipped: needs root, unshare, nsenter, ip and curl");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cs-localdb-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let isolated_demo = || {
        let mut command = Command::new("unshare");
        command
            .args([
                "-n",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" serve --demo",
                BIN,
            ])
            .env_remove("DATABASE_URL")
            .env("BIND_ADDR", "127.0.0.1:8080");
        command
    };
    let create_in_namespace = |pid: u32, url: &str, key: &str| -> Value {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "curl",
                "-s",
                "-X",
                "POST",
                url,
            ])
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args(["-H", "Content-Type: application/json"])
            .args(["-d", &seed_request().to_string()])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("a JSON session")
    };
    let stop = |mut child: std::process::Child| {
        // SIGTERM, as an operator's Ctrl-C: the server stops its PostgreSQL on the way out.
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "clean exit: {status:?}");
    };
    let pid_file = dir.join(".data/postgres/postmaster.pid");

    let (child, key, url) = spawn_demo(isolated_demo(), &dir);
    assert!(
        pid_file.is_file(),
        "the private PostgreSQL runs from ./.data/postgres"
    );
    let session = create_in_namespace(child.id(), &url, &key);
    assert_eq!(session["status"], "Pending", "{session}");
    assert_eq!(session["pay_address"], "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH");
    stop(child);
    assert!(!pid_file.exists(), "stopped with the server");

    // A restart reuses the cluster, the merchant, the key and the address counter.
    let (child, key2, url2) = spawn_demo(isolated_demo(), &dir);
    assert_eq!(key, key2);
    let session = create_in_namespace(child.id(), &url2, &key2);
    assert_ne!(
        session["pay_address"], "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH",
        "index 1 now"
    );
    assert!(session["pay_address"].as_str().unwrap().starts_with('T'));
    stop(child);
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_goes_on_without_metrics_when_only_the_default_metrics_port_is_taken() {
    // Prometheus itself listens on 9090: held here (or already held by something else).
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("cs-metrics-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut child, key, url) = start_demo(&dir, &db);
    let res = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&key)
        .json(&seed_request())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn serve_exposes_metrics_on_metrics_addr_and_refuses_a_taken_one() {
    let db = fresh_database().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(BIN)
        .args(["serve"])
        .env_remove("CHECKOUT_CONFIG")
        .env("DATABASE_URL", &db)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(one_line_error(&out).contains("METRICS_ADDR"));

    let addr = free_local_address();
    let mut child = serve_with_metrics(&db, "127.0.0.1:0", addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(res) = reqwest::get(format!("http://{addr}/metrics")).await {
            break res.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no metrics on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert!(text.contains("checkout_db_pool_max_connections"), "{text}");
    // The binary's allocator reports its heap: resident covers what is allocated.
    let allocated = gauge(&text, "checkout_heap_allocated_bytes");
    assert!(allocated > 0.0, "{text}");
    assert!(
        gauge(&text, "checkout_heap_resident_bytes") >= allocated,
        "{text}"
    );
}

/// `serve` on `bind` with metrics on `metrics`, its output discarded.
fn serve_with_metrics(db: &str, bind: &str, metrics: std::net::SocketAddr) -> std::process::Child {
    Command::new(BIN)
        .args(["serve"])
        .env_remove("CHECKOUT_CONFIG")
        .env("DATABASE_URL", db)
        .env("BIND_ADDR", bind)
        .env("METRICS_ADDR", metrics.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A sample's value in a `/metrics` text.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// The server's heap as `/metrics` reports it (read before the scrape renders anything).
async fn heap_allocated(metrics: std::net::SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    gauge(&text, "checkout_heap_allocated_bytes")
}

#[tokio::test]
async fn request_latencies_do_not_pile_up_in_memory_between_scrapes() {
    let db = fresh_database().await;
    let (api, metrics) = (free_local_address(), free_local_address());
    let mut child = serve_with_metrics(&db, &api.to_string(), metrics);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://{api}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let baseline = heap_allocated(metrics).await;

    // Each request records its latency; nothing scrapes meanwhile.
    let client = reqwest::Client::new();
    let load = |requests: usize| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                let (client, url) = (client.clone(), format!("http://{api}/healthz"));
                tokio::spawn(async move {
                    for _ in 0..requests / 16 {
                        assert!(client.get(&url).send().await.unwrap().status().is_success());
                    }
                })
            })
            .collect();
        futures_util::future::join_all(workers)
    };
    load(48_000).await;
    // Past the 5 s upkeep; then requests again, so memory freed by it is reclaimed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    load(1_600).await;
    let held = heap_allocated(metrics).await - baseline;
    child.kill().unwrap();
    let _ = child.wait();
    // 49,600 samples kept one by one would be about 800 KB.
    assert!(
        held < 300_000.0,
        "{held} bytes more on the heap after 49,600 requests"
    );
}

fn free_local_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn authorize_with(stdin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["sweep", "authorize"])
        .args(args)
        // Offline: no database, and a configuration that would not even load.
        .env("DATABASE_URL", "not a url")
        .env("CHECKOUT_CONFIG", "/nonexistent/checkout.toml")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn sweep_authorize_signs_offline_from_stdin_and_import_checks_every_signature() {
    const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about\n";
    let xpub = checkout_server::domain::address::PUBLIC_TEST_EVM_XPUB;
    let treasury = "0x00000000000000000000000000000000000000aa";
    let args = [
        "--xpub",
        xpub,
        "--chain-id",
        "56",
        "--treasury",
        treasury,
        "--from",
        "2",
        "--to",
        "5",
    ];
    let file = json_out(&authorize_with(MNEMONIC, &args));
    assert_eq!(file["chain_id"], 56);
    let entries = file["authorizations"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["index"], 2);
    assert!(
        !file.to_string().contains("abandon"),
        "no key material in the output"
    );

    // Another wallet's mnemonic, or one given as an argument, is refused.
    let other = "legal winner thank year wave sausage worth useful legal winner thank yellow\n";
    let refused = one_line_error(&authorize_with(other, &args));
    assert!(refused.contains("different account xpub"), "{refused}");
    let mut with_arg = args.to_vec();
    with_arg.extend(["--mnemonic", MNEMONIC.trim()]);
    assert!(!authorize_with("", &with_arg).status.success());

    // Import: the merchant's xpub must be the file's, and each signature its address's.
    let db = fresh_database().await;
    let pool = checkout_server::db::connect(&db).await.unwrap();
    checkout_server::db::MIGRATOR.run(&pool).await.unwrap();
    create_merchant_with_xpubs(&pool, "Swept", None, Some(xpub)).await;
    create_merchant(&pool, "Other", true).await;
    let id = |name: &str| {
        let pool = pool.clone();
        let name = name.to_owned();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM merchants WHERE name = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
                .to_string()
        }
    };
    let dir = std::env::temp_dir().join(format!("auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("auth.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let path = path.to_str().unwrap();
    let swept = id("Swept").await;
    let imported = json_out(&cli(
        &db,
        &["sweep", "import-authorizations", path, "--merchant", &swept],
    ));
    assert_eq!(imported["imported"], 3);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_authorizations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 3);
    let other = id("Other").await;
    let refused = one_line_error(&cli(
        &db,
        &["sweep", "import-authorizations", path, "--merchant", &other],
    ));
    assert!(refused.contains("not the merchant's EVM xpub"), "{refused}");
    let mut tampered = file.clone();
    tampered["authorizations"][1]["s"] = tampered["authorizations"][0]["s"].clone();
    std::fs::write(path, tampered.to_string()).unwrap();
    let refused = one_line_error(&cli(
        &db,
        &["sweep", "import-authorizations", path, "--merchant", &swept],
    ));
    assert!(refused.contains("authorization 1"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sweep_deploy_delegate_and_run_work_from_the_configuration_file() {
    let anvil = crate::chain_support::Anvil::start_with(&["--hardfork", "prague"]).await;
    let usdc = anvil.deploy_token(6).await;
    let db = fresh_database().await;
    let merchant = json_out(&cli(&db, &["merchant", "create", "--name", "Swept"]));
    let dir = std::env::temp_dir().join(format!("cs-sweep-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("tank");
    std::fs::write(
        &key,
        "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    )
    .unwrap();
    let treasury = "0x00000000000000000000000000000000000000aa";
    let config = dir.join("checkout.toml");
    std::fs::write(
        &config,
        format!(
            r#"[networks.BSC.test]
rpc_urls = ["{url}"]
chain_id = 31337
tokens.USDC = {{ contract = "{usdc}", decimals = 6 }}

[sweep.BSC.test]
merchant = "{merchant}"
treasury = "{treasury}"
gas_tank_key_file = "{key}"
max_gas_price_gwei = "50"
"#,
            url = anvil.url,
            usdc = crate::chain_support::hex20(&usdc),
            merchant = merchant["id"].as_str().unwrap(),
            key = key.display(),
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", &db)
            .env("CHECKOUT_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let expected = checkout_server::sweep::delegate::delegate_address(treasury.parse().unwrap());
    let deployed = json_out(&with_config(&[
        "sweep",
        "deploy-delegate",
        "--network",
        "BSC",
        "--mode",
        "test",
    ]));
    assert_eq!(
        deployed["delegate"].as_str().unwrap().to_lowercase(),
        expected.to_string().to_lowercase()
    );
    let run = json_out(&with_config(&[
        "sweep",
        "run",
        "--network",
        "bsc",
        "--mode",
        "test",
    ]));
    assert_eq!(
        run["sent"],
        serde_json::json!([]),
        "nothing paid, nothing sent: {run}"
    );
    let missing = one_line_error(&with_config(&[
        "sweep",
        "run",
        "--network",
        "BASE",
        "--mode",
        "test",
    ]));
    assert!(missing.contains("no [sweep.BASE.test] table"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}
