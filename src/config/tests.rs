use super::*;
use crate::domain::money::Token;

#[test]
fn defaults_enable_nothing() {
    let c = Config::defaults();
    assert!(c.enabled_networks().is_empty());
    assert_eq!(c.session_ttl, chrono::Duration::minutes(30));
    assert_eq!(c.network(Network::Bsc, Mode::Live).tokens[0].decimals, 18);
    assert_eq!(
        c.network(Network::Tron, Mode::Test).tokens[0].contract,
        "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
    );
    assert_eq!(c.base_url, "http://localhost:8080");
}

#[test]
fn the_example_file_is_valid() {
    let text = include_str!("../../checkout.example.toml");
    let c = Config::from_toml(text).unwrap();
    assert!(c.network(Network::Tron, Mode::Test).enabled());
}

#[test]
fn overrides_apply() {
    let c = Config::from_toml(
        r#"
        [networks.bsc.test]
        rpc_urls = ["http://127.0.0.1:8545"]
        chain_id = 31337
        confirmations = 3
        tokens.USDT = { contract = "0x5fbdb2315678afecb367f032d93f642f64180aa3", decimals = 6 }
        "#,
    )
    .unwrap();
    let bsc = c.network(Network::Bsc, Mode::Test);
    assert!(bsc.enabled());
    assert_eq!(bsc.chain_id, Some(31337));
    assert_eq!(
        bsc.token(Token::Usdt).unwrap().contract,
        "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    );
    assert_eq!(bsc.token(Token::Usdt).unwrap().decimals, 6);
    assert!(!c.network(Network::Bsc, Mode::Live).enabled());
}

fn error_of(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn bad_configs_name_the_key() {
    assert!(error_of("[networks.DOGE.test]\nsimulated = true").starts_with("networks.DOGE:"));
    assert!(error_of("[networks.TRON.prod]\nsimulated = true").starts_with("networks.TRON.prod:"));
    assert!(error_of("[wallets]\nevm_xpub = \"xpub123\"").starts_with("wallets.evm_xpub:"));
    assert!(
        error_of("[networks.BSC.test]\ntokens.USDT = { contract = \"0x12\" }")
            .starts_with("networks.BSC.test.tokens.USDT.contract:")
    );
    assert!(error_of("[networks.TRON.test]\ntokens.USDT = { contract = \"0xdAC17F958D2ee523a2206206994597C13D831ec7\" }").starts_with("networks.TRON.test.tokens.USDT.contract:"));
    assert!(error_of("[networks.BSC.test]\nrpc_urls = [\"not a url\"]")
        .starts_with("networks.BSC.test.rpc_urls[0]:"));
    assert!(error_of("[networks.TRON.live]\nsimulated = true")
        .starts_with("networks.TRON.live.simulated:"));
    assert!(
        error_of("[networks.SOLANA.test]\nsimulated = true").starts_with("networks.SOLANA.test:")
    );
    assert!(error_of("[networks.SOLANA.test]\nchain_id = 1")
        .starts_with("networks.SOLANA.test.chain_id:"));
    let tron = Config::from_toml("[networks.TRON.live]\nchain_id = 3448148188").unwrap();
    assert_eq!(
        tron.network(Network::Tron, Mode::Live).chain_id,
        Some(0xcd8690dc),
        "a TRON chain id can be set (here Nile's)"
    );
    assert!(error_of("[rates]\nsource = \"magic\"").starts_with("rates.source:"));
    assert!(error_of("[rates]\nstatic = { XYZ = \"1\" }").starts_with("rates.static.XYZ:"));
    assert!(error_of("[fees]\nrate = \"-1\"").starts_with("fees.rate:"));
    assert!(error_of("session_ttl_minutes = 0").starts_with("session_ttl_minutes:"));
    let unknown = error_of("sesion_ttl_minutes = 5");
    assert!(
        unknown.starts_with("config file: line 1:") && unknown.contains("sesion_ttl_minutes"),
        "{unknown}"
    );
    assert!(!error_of("[wallets\n").contains('\n'));
    for bad in ["0", "-1", "abc", "0.0000001"] {
        let text = format!(
            "[networks.TRON.live]\ntokens.USDT = {{ contract = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\", min_amount = \"{bad}\" }}"
        );
        assert!(
            error_of(&text).starts_with("networks.TRON.live.tokens.USDT.min_amount:"),
            "{bad}"
        );
    }
    assert!(
        error_of("[networks.BSC.test]\nrpc_headers = { \"X Key\" = \"a\" }")
            .starts_with("networks.BSC.test.rpc_headers.X Key: is not a valid header name")
    );
    let bad_value = "[networks.BSC.test]\nrpc_urls = [{ url = \"https://rpc.example\", headers = { X-Key = \"a\\nb\" } }]";
    assert!(error_of(bad_value).starts_with("networks.BSC.test.rpc_urls[0].headers.X-Key:"));
    assert!(error_of("[networks.BSC.live]\nmax_response_kib = 0")
        .starts_with("networks.BSC.live.max_response_kib:"));
}

#[test]
fn the_minimum_creditable_amount_defaults_to_a_cent_and_goes_down_to_one_base_unit() {
    let config = Config::from_toml(
        "[networks.TRON.live]\ntokens.USDT = { contract = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\", min_amount = \"0.000001\" }\n[networks.BSC.live]\nmax_response_kib = 64",
    )
    .unwrap();
    let min = |n: Network| {
        config.network(n, Mode::Live).tokens[0]
            .min_amount
            .to_string()
    };
    assert_eq!(min(Network::Tron), "0.000001");
    assert_eq!(min(Network::Ethereum), "0.01");
    assert_eq!(
        config.network(Network::Bsc, Mode::Live).max_response_bytes,
        64 * 1024
    );
}

#[test]
fn watcher_and_scan_limits_name_the_key() {
    assert!(error_of("[watcher]\ndenylist_file = \"/nonexistent/x\"")
        .starts_with("watcher.denylist_file:"));
    assert!(error_of("[watcher]\nlease_seconds = 1").starts_with("watcher.lease_seconds:"));
    assert!(error_of("[networks.BSC.test]\nmax_block_range = 0")
        .starts_with("networks.BSC.test.max_block_range:"));
    assert!(
        error_of("[networks.POLYGON.live]\nmax_blocks_per_scan = 100")
            .starts_with("networks.POLYGON.live.max_blocks_per_scan:"),
        "Polygon needs 128 confirmations"
    );
}

#[test]
fn rate_limits_default_to_the_contract_and_can_be_set() {
    let d = Config::defaults().rate_limits;
    assert_eq!((d.live.per_second, d.live.burst), (100, 200));
    assert_eq!((d.test.per_second, d.test.burst), (25, 50));
    assert_eq!((d.ip.per_second, d.ip.burst, d.ip_streams), (20, 40, 20));
    assert!(d.client_ip_header.is_none() && d.trusted_proxies.is_empty());
    let c = Config::from_toml(
        "[rate_limits]\nlive_per_second = 7\ntest_burst = 3\nip_streams = 2\n\
         client_ip_header = \"X-Forwarded-For\"\n\
         trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\", \"::ffff:192.0.2.1\"]",
    )
    .unwrap()
    .rate_limits;
    assert_eq!((c.live.per_second, c.live.burst), (7, 200));
    assert_eq!((c.test.per_second, c.test.burst), (25, 3));
    assert_eq!(c.ip_streams, 2);
    assert_eq!(c.client_ip_header.unwrap().as_str(), "x-forwarded-for");
    let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "192.0.2.1/32"]
    );
}

#[test]
fn bad_rate_limits_name_the_key() {
    for (text, key) in [
        ("live_per_second = 0", "rate_limits.live_per_second:"),
        ("test_burst = 0", "rate_limits.test_burst:"),
        ("ip_burst = 2000000", "rate_limits.ip_burst:"),
        ("ip_streams = 0", "rate_limits.ip_streams:"),
        ("ip_per_second = -1", "config file: line 2:"),
        (
            "client_ip_header = \"X Forwarded\"\ntrusted_proxies = [\"10.0.0.1\"]",
            "rate_limits.client_ip_header:",
        ),
        (
            "client_ip_header = \"X-Forwarded-For\"",
            "rate_limits.client_ip_header:",
        ),
        (
            "trusted_proxies = [\"10.0.0.1\"]",
            "rate_limits.trusted_proxies:",
        ),
        (
            "client_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1\", \"proxy.local\"]",
            "rate_limits.trusted_proxies[1]:",
        ),
        (
            "client_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
            "rate_limits.trusted_proxies[0]:",
        ),
        ("ip_limit = 5", "config file: line 2:"),
    ] {
        let e = error_of(&format!("[rate_limits]\n{text}"));
        assert!(e.starts_with(key) && !e.contains('\n'), "{text}: {e}");
    }
    assert!(error_of(
        "[rate_limits]\nclient_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1/8\"]"
    )
    .contains("10.0.0.0/8"));
}

#[test]
fn the_metrics_address_defaults_to_loopback_and_can_be_turned_off() {
    let c = Config::defaults();
    assert_eq!(c.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(c.metrics_addr_is_default);
    let off = Config::from_parts(|n| (n == "METRICS_ADDR").then(|| "off".into()), None).unwrap();
    assert_eq!(off.metrics_addr, None);
    let file = Config::from_toml("metrics_addr = \"10.0.0.5:9100\"").unwrap();
    assert_eq!(file.metrics_addr, Some("10.0.0.5:9100".parse().unwrap()));
    assert!(!file.metrics_addr_is_default);
    assert!(error_of("metrics_addr = \"everywhere\"").starts_with("METRICS_ADDR:"));
}

#[test]
fn environment_wins() {
    let env = |name: &str| match name {
        "CHECKOUT_BASE_URL" => Some("https://pay.example.com/".into()),
        "BIND_ADDR" => Some("127.0.0.1:9999".into()),
        _ => None,
    };
    let c = Config::from_parts(env, Some("base_url = \"https://other.example.com\"")).unwrap();
    assert_eq!(c.base_url, "https://pay.example.com");
    assert_eq!(c.bind_addr.port(), 9999);
    assert!(c.database_url_is_default);
}

#[test]
fn duration_keys_keep_their_units() {
    let c = Config::from_toml(
        "[http]\nheader_read_timeout_ms = 1500\nrequest_timeout_ms = 2500\n\
         [idempotency]\nlock_timeout_seconds = 7\nretention_hours = 48\n\
         [watcher]\nlease_seconds = 20\nexpiry_interval_ms = 750\n\
         [webhooks]\ntimeout_ms = 300\nretry_schedule_seconds = [1, 2]\npoll_interval_ms = 20\n\
         [rates]\nrefresh_seconds = 5\nmax_age_seconds = 9\n\
         [networks.BSC.test]\npoll_interval_ms = 60\nmax_lag_seconds = 3",
    )
    .unwrap();
    let (ms, s) = (Duration::from_millis, Duration::from_secs);
    assert_eq!(
        (c.http.header_read_timeout, c.http.request_timeout),
        (ms(1500), ms(2500))
    );
    assert_eq!(
        (c.idempotency.lock_timeout, c.idempotency.retention),
        (s(7), s(48 * 3600))
    );
    assert_eq!(
        (c.watcher.lease, c.watcher.expiry_interval),
        (s(20), ms(750))
    );
    assert_eq!(
        (c.webhooks.timeout, c.webhooks.poll_interval),
        (ms(300), ms(20))
    );
    assert_eq!(c.webhooks.retry_schedule, [s(1), s(2)]);
    assert_eq!((c.rates.refresh_interval, c.rates.max_age), (s(5), s(9)));
    let bsc = c.network(Network::Bsc, Mode::Test);
    assert_eq!((bsc.poll_interval, bsc.max_lag), (ms(60), s(3)));
}

#[test]
fn out_of_range_values_give_their_bounds() {
    for (text, message) in [
        ("session_ttl_minutes = 10081", "session_ttl_minutes: must be between 1 and 10080 (7 days)"),
        ("[http]\nmax_header_bytes = 100", "http.max_header_bytes: must be between 4096 and 524288"),
        ("[idempotency]\nretention_hours = 23", "idempotency.retention_hours: must be between 24 and 2160"),
        ("[idempotency]\nretention_hours = 9223372036854775807", "idempotency.retention_hours: must be between 24 and 2160"),
        ("[webhooks]\ntimeout_ms = 99", "webhooks.timeout_ms: must be between 100 and 60000"),
        ("[webhooks]\nretry_schedule_seconds = [604801]", "webhooks.retry_schedule_seconds: at most 20 waits of at most 7 days each"),
        ("[watcher]\nexpiry_interval_ms = 49", "watcher.expiry_interval_ms: must be between 50 and 600000"),
        ("[rates]\nmax_age_seconds = 0", "rates.max_age_seconds: must be between 1 and 3600"),
        ("[networks.BSC.test]\npoll_interval_ms = 49", "networks.BSC.test.poll_interval_ms: must be at least 50"),
        ("[networks.BSC.test]\nmax_lag_seconds = 0", "networks.BSC.test.max_lag_seconds: must be at least 1"),
        ("[networks.BSC.test]\ntokens.USDT = { contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\", decimals = 37 }", "networks.BSC.test.tokens.USDT.decimals: must be at most 36"),
    ] {
        assert_eq!(error_of(text), message);
    }
}

#[test]
fn debug_output_hides_secrets() {
    let c = Config::from_toml(
        "[rates]\nsource = \"coingecko\"\napi_key = \"CG-rates-secret\"\n\
         [networks.TRON.test]\nrpc_urls = [\"https://nile.trongrid.io\"]\n\
         rpc_headers = { TRON-PRO-API-KEY = \"trongrid-secret\" }",
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        debug.contains("TRON-PRO-API-KEY") && debug.contains("api_key"),
        "{debug}"
    );
    assert!(!debug.contains("trongrid-secret") && !debug.contains("CG-rates-secret"));
}

#[test]
fn rpc_urls_may_carry_their_own_headers_and_rate() {
    let c = Config::from_toml(
        "[networks.TRON.live]\n\
         rpc_urls = [{ url = \"https://api.trongrid.io/jsonrpc\", headers = { TRON-PRO-API-KEY = \"k\" }, max_requests_per_second = 10 }, \"https://fallback.example/jsonrpc\"]",
    )
    .unwrap();
    let urls = &c.network(Network::Tron, Mode::Live).rpc_urls;
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[0].headers["TRON-PRO-API-KEY"].expose(), "k");
    assert_eq!(urls[0].max_requests_per_second, Some(10));
    assert_eq!(urls[1], RpcUrl::from("https://fallback.example/jsonrpc"));
    assert!(error_of("[networks.BSC.live]\nrpc_urls = [{ url = \"https://x.example\", max_requests_per_second = 0 }]")
        .starts_with("networks.BSC.live.rpc_urls[0].max_requests_per_second:"));
    assert!(error_of("[networks.BSC.live]\nrpc_urls = [{ url = \"https://x.example\", headers = { \"bad name\" = \"v\" } }]")
        .starts_with("networks.BSC.live.rpc_urls[0].headers.bad name:"));
    assert!(
        error_of("[networks.BSC.live]\nrpc_urls = [{ url = \"ftp://x\" }]")
            .starts_with("networks.BSC.live.rpc_urls[0]:")
    );
}

#[test]
fn finality_batches_and_daily_budgets_are_per_network_settings() {
    use crate::domain::network::Finality;
    let c = Config::defaults();
    assert_eq!(c.network(Network::Tron, Mode::Live).finality, Finality::Tag);
    assert_eq!(c.network(Network::Tron, Mode::Test).finality, Finality::Tag);
    assert_eq!(
        c.network(Network::Ethereum, Mode::Live).finality,
        Finality::Depth
    );
    assert!(c.network(Network::Bsc, Mode::Live).batch);
    let c = Config::from_toml(
        r#"
        [networks.ETHEREUM.live]
        rpc_urls = [{ url = "https://a.example/", max_requests_per_day = 90000 }]
        finality = "tag"
        batch = false
        "#,
    )
    .unwrap();
    let eth = c.network(Network::Ethereum, Mode::Live);
    assert_eq!(eth.finality, Finality::Tag);
    assert!(!eth.batch);
    assert_eq!(eth.rpc_urls[0].max_requests_per_day, Some(90_000));
    let error = error_of("[networks.TRON.live]\nfinality = \"safe\"");
    assert!(error.contains("expected `tag` or `depth`"), "{error}");
    assert!(error_of(
        "[networks.TRON.live]\nrpc_urls = [{ url = \"https://a.example/\", max_requests_per_day = 5 }]"
    )
    .starts_with("networks.TRON.live.rpc_urls[0].max_requests_per_day"));
}

#[test]
fn test_mode_reads_testnets_and_asks_for_a_token_where_none_is_documented() {
    let c = Config::from_toml("[networks.BASE.test]\nrpc_urls = [\"https://sepolia.base.org/\"]\n")
        .unwrap();
    let base = c.network(Network::Base, Mode::Test);
    assert_eq!(base.chain_id, Some(84_532));
    assert_eq!(
        base.token(Token::Usdc).unwrap().contract,
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
    );
    assert!(base.token(Token::Usdt).is_none(), "no documented test USDT");
    // BSC testnet documents neither: the operator must name one.
    let error = error_of("[networks.BSC.test]\nrpc_urls = [\"https://bsc-testnet.example/\"]\n");
    assert!(error.starts_with("networks.BSC.test.tokens:"), "{error}");
    let c = Config::from_toml(
        "[networks.BSC.test]\nrpc_urls = [\"https://bsc-testnet.example/\"]\ntokens.USDT = { contract = \"0x337610d27c682E347C9cD60BD4b3b107C9d34dDd\", decimals = 18 }\n",
    )
    .unwrap();
    assert_eq!(c.network(Network::Bsc, Mode::Test).chain_id, Some(97));
    // Simulated, no chain is read: mainnet's tokens stand in.
    let c = Config::from_toml("[networks.BSC.test]\nsimulated = true\n").unwrap();
    let bsc = c.network(Network::Bsc, Mode::Test);
    assert_eq!(bsc.token(Token::Usdt).unwrap().decimals, 18);
}

#[test]
fn sweep_tables_name_the_key_and_default_the_delegate() {
    let dir = std::env::temp_dir().join(format!("sweep-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("tank");
    std::fs::write(
        &key,
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6\n",
    )
    .unwrap();
    let net = "[networks.BSC.live]\nrpc_urls = [\"https://bsc.example\"]\n";
    let table = |body: &str| {
        format!(
            "{net}[sweep.BSC.live]\nmerchant = \"6f1c3c52-3d5e-4f59-9d0e-2f1f6f2f8a11\"\n{body}"
        )
    };
    let ok = table(&format!(
        "treasury = \"0x00000000000000000000000000000000000000aa\"\ngas_tank_key_file = \"{}\"\nmax_gas_price_gwei = \"3\"",
        key.display()
    ));
    let config = Config::from_toml(&ok).unwrap();
    let sweep = &config.sweeps[0];
    assert_eq!(
        sweep.delegate,
        crate::sweep::delegate::delegate_address(sweep.treasury)
    );
    assert_eq!(sweep.max_gas_price_wei(), 3_000_000_000);
    assert_eq!(sweep.batch_size, 30);
    assert!(
        !format!("{config:?}").contains("7c852118"),
        "the key is never shown"
    );

    let bad = |body: String| error_of(&table(&body));
    let tank = format!(
        "gas_tank_key_file = \"{}\"\nmax_gas_price_gwei = \"3\"",
        key.display()
    );
    assert!(bad(format!("treasury = \"0x12\"\n{tank}")).starts_with("sweep.BSC.live.treasury:"));
    assert!(bad(
        "treasury = \"0x00000000000000000000000000000000000000aa\"\ngas_tank_key_file = \"/nonexistent\"\nmax_gas_price_gwei = \"3\"".into()
    )
    .starts_with("sweep.BSC.live.gas_tank_key_file: cannot read"));
    assert!(bad(format!(
        "treasury = \"0x00000000000000000000000000000000000000aa\"\n{tank}\nbatch_size = 0"
    ))
    .starts_with("sweep.BSC.live.batch_size:"));
    std::fs::write(&key, "not a key").unwrap();
    assert!(bad(format!(
        "treasury = \"0x00000000000000000000000000000000000000aa\"\n{tank}"
    ))
    .starts_with("sweep.BSC.live.gas_tank_key_file: must hold one private key"));
    assert!(error_of(&format!(
        "[sweep.BSC.live]\nmerchant = \"6f1c3c52-3d5e-4f59-9d0e-2f1f6f2f8a11\"\ntreasury = \"0x00000000000000000000000000000000000000aa\"\n{tank}"
    ))
    .starts_with("sweep.BSC.live: networks.BSC.live has no rpc_urls"));
    // A TRON table has TRON's fields: an EVM one is refused, naming the field.
    assert!(error_of(&format!(
        "[networks.TRON.live]\nrpc_urls = [\"https://t.example/jsonrpc\"]\n[sweep.TRON.live]\nmerchant = \"6f1c3c52-3d5e-4f59-9d0e-2f1f6f2f8a11\"\ntreasury = \"0x00000000000000000000000000000000000000aa\"\n{tank}"
    ))
    .starts_with("sweep.TRON.live: unknown field `gas_tank_key_file`"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tron_sweep_tables_derive_the_http_api_and_default_the_staking_account() {
    let dir = std::env::temp_dir().join(format!("tron-sweep-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let gas = dir.join("gas");
    std::fs::write(
        &gas,
        "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6\n",
    )
    .unwrap();
    let staking = dir.join("staking");
    std::fs::write(
        &staking,
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    )
    .unwrap();
    let treasury = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    let table = |body: &str| {
        format!(
            "[networks.TRON.live]\nrpc_urls = [{{ url = \"https://api.trongrid.io/jsonrpc\", headers = {{ TRON-PRO-API-KEY = \"k\" }} }}]\n[sweep.TRON.live]\nmerchant = \"6f1c3c52-3d5e-4f59-9d0e-2f1f6f2f8a11\"\ntreasury = \"{treasury}\"\ngas_wallet_key_file = \"{}\"\n{body}",
            gas.display()
        )
    };
    let config = Config::from_toml(&table("energy = \"delegate\"")).unwrap();
    let sweep = &config.tron_sweeps[0];
    assert!(config.sweeps.is_empty());
    assert_eq!(sweep.http_urls[0].url, "https://api.trongrid.io");
    assert_eq!(sweep.http_urls[0].headers["TRON-PRO-API-KEY"].expose(), "k");
    assert_eq!(
        sweep.staking_account,
        Some(sweep.gas_wallet),
        "the gas wallet stakes"
    );
    assert!(sweep.staking_key.is_some());
    assert_eq!(sweep.signing_window.as_secs(), 23 * 3600);
    assert_eq!(sweep.activation_trx, rust_decimal::Decimal::new(11, 1));
    assert!(
        !format!("{config:?}").contains("7c852118"),
        "the key is never shown"
    );

    // A staking account kept offline: its delegations are signed with the transfers.
    let offline = Config::from_toml(&table(
        "energy = \"delegate\"\nstaking_account = \"TJRabPrwbZy45sbavfcjinPJC18kjpRTv8\"",
    ))
    .unwrap();
    assert!(offline.tron_sweeps[0].staking_key.is_none());
    let with_key = Config::from_toml(&table(&format!(
        "energy = \"delegate\"\nstaking_key_file = \"{}\"",
        staking.display()
    )))
    .unwrap();
    assert_ne!(
        with_key.tron_sweeps[0].staking_account,
        Some(with_key.tron_sweeps[0].gas_wallet)
    );
    assert!(with_key.tron_sweeps[0].staking_key.is_some());

    let bad = |body: &str| error_of(&table(body));
    assert!(bad("energy = \"rent\"").starts_with("sweep.TRON.live: unknown variant `rent`"));
    assert!(bad("").starts_with("sweep.TRON.live: missing field `energy`"));
    assert!(
        bad("energy = \"burn\"\nstaking_account = \"TJRabPrwbZy45sbavfcjinPJC18kjpRTv8\"")
            .starts_with("sweep.TRON.live.staking_account: only for energy = \"delegate\"")
    );
    assert!(bad("energy = \"burn\"\nsigning_window_hours = 24")
        .starts_with("sweep.TRON.live.signing_window_hours:"));
    assert!(bad("energy = \"burn\"\ntreasury2 = 1").contains("unknown field `treasury2`"));
    let no_jsonrpc = error_of(&format!(
        "[networks.TRON.live]\nrpc_urls = [\"https://tron.example/rpc\"]\n[sweep.TRON.live]\nmerchant = \"6f1c3c52-3d5e-4f59-9d0e-2f1f6f2f8a11\"\ntreasury = \"{treasury}\"\ngas_wallet_key_file = \"{}\"\nenergy = \"burn\"",
        gas.display()
    ));
    assert!(
        no_jsonrpc.starts_with("sweep.TRON.live.http_urls:"),
        "{no_jsonrpc}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
