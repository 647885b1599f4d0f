use anyhow::Context;
use checkout_server::config::Config;
use checkout_server::domain::api_key::Mode;
use checkout_server::localdb::{self, LocalPostgres};
use checkout_server::service::merchants::{self, MerchantSpec};
use checkout_server::service::sweeps as service_sweeps;
use checkout_server::startup::{self, Application};
use checkout_server::state::AppState;
use checkout_server::{db, sweep, telemetry};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Self-hosted hosted-checkout server for stablecoin payments.
#[derive(Parser)]
#[command(name = "checkout-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and hosted pages (applies pending migrations first).
    Serve {
        /// Also create a demo merchant (once) and print its test key and a curl command.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Manage merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Collect deposit balances into the treasury (EVM: EIP-7702 sweeps; TRON: plan, sign
    /// offline, broadcast).
    Sweep {
        #[command(subcommand)]
        command: SweepCommand,
    },
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Offline: sign EIP-7702 authorizations for address indexes [from, to). Needs no
    /// database and no network; reads the mnemonic from a file or stdin, never an argument.
    Authorize {
        /// The merchant's EVM account xpub (m/44'/60'/account'), as the server holds it.
        #[arg(long)]
        xpub: String,
        #[arg(long)]
        chain_id: u64,
        /// The treasury: the delegate is its deterministic SweepDelegate address.
        #[arg(
            long,
            conflicts_with = "delegate",
            required_unless_present = "delegate"
        )]
        treasury: Option<String>,
        /// Or the delegate's address itself.
        #[arg(long)]
        delegate: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u32,
        #[arg(long)]
        to: u32,
        /// The addresses' current nonce: 0 for addresses never delegated, 1 to re-point
        /// addresses delegated once (to a new treasury's delegate).
        #[arg(long, default_value_t = 0)]
        nonce: u64,
        /// A file holding the mnemonic; `-` (the default) reads it from stdin.
        #[arg(long, default_value = "-")]
        mnemonic_file: String,
        /// A file holding the BIP-39 passphrase, if the wallet has one.
        #[arg(long)]
        passphrase_file: Option<String>,
        /// Where to write the authorizations (default: stdout).
        #[arg(long)]
        out: Option<String>,
    },
    /// Store a file of authorizations (checked against the merchant's xpub).
    ImportAuthorizations {
        file: String,
        #[arg(long)]
        merchant: Uuid,
    },
    /// Deploy the SweepDelegate of a `[sweep.NETWORK.mode]` table's treasury (once).
    DeployDelegate {
        #[arg(long)]
        network: String,
        #[arg(long, default_value = "live")]
        mode: Mode,
    },
    /// Sweep now: settle sent sweeps, send the due ones, and wait until they settle.
    Run {
        #[arg(long)]
        network: String,
        #[arg(long, default_value = "live")]
        mode: Mode,
    },
    /// TRON, online, no keys: list the addresses to sweep with their costs, and write the
    /// plan (with its reference block) to sign offline.
    Plan {
        #[arg(long)]
        network: String,
        #[arg(long, default_value = "live")]
        mode: Mode,
        /// Where to write the plan (default: stdout).
        #[arg(long)]
        out: Option<String>,
    },
    /// TRON, offline: sign a plan's USDT transfers with the mnemonic. Needs no database and
    /// no network; reads the mnemonic from a file or stdin, never an argument.
    Sign {
        #[arg(long)]
        plan: String,
        /// A file holding the mnemonic; `-` (the default) reads it from stdin.
        #[arg(long, default_value = "-")]
        mnemonic_file: String,
        #[arg(long)]
        passphrase_file: Option<String>,
        /// The staking account's private key (hex), when the plan's delegations are signed
        /// offline.
        #[arg(long)]
        staking_key_file: Option<String>,
        /// Where to write the signed plan (default: stdout).
        #[arg(long)]
        out: Option<String>,
    },
    /// TRON: send a signed plan (activation, delegation, transfers, undelegation), wait for
    /// each step's confirmations and record the sweep. Run again to resume.
    Broadcast { signed: String },
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant; prints {"id", "name", "test_key", "live_key"}.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        logo_url: Option<String>,
        /// Account-level TRON xpub (m/44'/195'/0').
        #[arg(long)]
        tron_xpub: Option<String>,
        /// Account-level EVM xpub (m/44'/60'/0').
        #[arg(long)]
        evm_xpub: Option<String>,
        /// Fee rate, e.g. 0.005 for 0.5 %; 0 for no fee. Defaults to the server's.
        #[arg(long)]
        fee_rate: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; prints {"key"}.
    Create {
        #[arg(long)]
        merchant: Uuid,
        #[arg(long)]
        mode: Mode,
    },
    /// Revoke a key at once.
    Revoke {
        #[arg(long)]
        key: String,
    },
}

/// jemalloc hands memory freed after a burst (thousands of pages opening at once) back to the
/// system; glibc's malloc kept it, so RSS stayed at the burst's peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: unused pages go back within about a second, by a
/// background thread, so an idle server returns them too.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0"[0]);

/// jemalloc's counters (refreshed by advancing its epoch), for the heap gauges of `/metrics`.
fn heap_stats() -> Option<checkout_server::metrics::HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(checkout_server::metrics::HeapStats {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    checkout_server::metrics::report_heap_with(heap_stats);
    // Offline signing reads no configuration and opens no connection.
    if let Command::Sweep {
        command: command @ (SweepCommand::Authorize { .. } | SweepCommand::Sign { .. }),
    } = cli.command
    {
        let signed = match command {
            SweepCommand::Sign { .. } => sign_plan(command),
            _ => authorize(command),
        };
        return match signed {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    db::prepare(&config.database_url).await.with_context(|| {
        format!(
            "cannot use the database at {}",
            redact(&config.database_url)
        )
    })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn print_json(value: serde_json::Value) {
    println!("{value}");
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { demo } => serve(config, demo).await,
        Command::Migrate => {
            connect(&config).await?;
            print_json(json!({ "migrated": true }));
            Ok(())
        }
        Command::Merchant {
            command:
                MerchantCommand::Create {
                    name,
                    logo_url,
                    tron_xpub,
                    evm_xpub,
                    fee_rate,
                },
        } => {
            let pool = connect(&config).await?;
            let spec = MerchantSpec {
                name,
                logo_url,
                tron_xpub,
                evm_xpub,
                fee_rate,
            };
            let created = merchants::create(&pool, &spec).await?;
            print_json(json!({
                "id": created.merchant.id,
                "name": created.merchant.name,
                "test_key": created.test_key.expose_secret(),
                "live_key": created.live_key.as_ref().map(|k| k.expose_secret()),
            }));
            Ok(())
        }
        Command::Sweep { command } => sweep_command(command, config).await,
        Command::ApiKey { command } => {
            let pool = connect(&config).await?;
            match command {
                ApiKeyCommand::Create { merchant, mode } => {
                    let key = merchants::create_key(&pool, merchant, mode).await?;
                    print_json(
                        json!({ "key": key.expose_secret(), "mode": mode.as_str(), "merchant": merchant }),
                    );
                }
                ApiKeyCommand::Revoke { key } => {
                    merchants::revoke_key(&pool, &key).await?;
                    print_json(json!({ "revoked": true }));
                }
            }
            Ok(())
        }
    }
}

fn read_secret(path: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    if path == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the mnemonic from stdin")?;
    } else {
        *text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    }
    Ok(text)
}

fn evm_address(flag: &str, text: &str) -> anyhow::Result<alloy_primitives::Address> {
    checkout_server::domain::address::parse_evm_address(text)
        .map(alloy_primitives::Address::from)
        .map_err(|m| anyhow::anyhow!("--{flag} {m}"))
}

fn authorize(command: SweepCommand) -> anyhow::Result<()> {
    let SweepCommand::Authorize {
        xpub,
        chain_id,
        treasury,
        delegate,
        from,
        to,
        nonce,
        mnemonic_file,
        passphrase_file,
        out,
    } = command
    else {
        unreachable!("only authorize is offline");
    };
    let delegate = match (treasury, delegate) {
        (_, Some(d)) => evm_address("delegate", &d)?,
        (Some(t), None) => sweep::delegate::delegate_address(evm_address("treasury", &t)?),
        (None, None) => anyhow::bail!("give --treasury or --delegate"),
    };
    let mnemonic = read_secret(&mnemonic_file)?;
    let passphrase = match passphrase_file {
        Some(path) => read_secret(&path)?,
        None => zeroize::Zeroizing::new(String::new()),
    };
    let passphrase = passphrase.trim_end_matches(['\r', '\n']);
    let file = sweep::authorize::authorize(
        &mnemonic, passphrase, &xpub, chain_id, delegate, from, to, nonce,
    )?;
    let text = serde_json::to_string_pretty(&file)?;
    match out {
        Some(path) => {
            std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {path}"))?;
            eprintln!(
                "{} authorizations for chain {chain_id}, delegate {delegate}, written to {path}",
                file.authorizations.len()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn write_output(out: Option<&str>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {path}")),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn sign_plan(command: SweepCommand) -> anyhow::Result<()> {
    let SweepCommand::Sign {
        plan,
        mnemonic_file,
        passphrase_file,
        staking_key_file,
        out,
    } = command
    else {
        unreachable!("only sign is offline here");
    };
    let text = std::fs::read_to_string(&plan).with_context(|| format!("cannot read {plan}"))?;
    let parsed: sweep::tron::plan::Plan =
        serde_json::from_str(&text).with_context(|| format!("{plan} is not a TRON sweep plan"))?;
    let staking_key = match staking_key_file {
        Some(path) => {
            let text = read_secret(&path)?;
            let text = text.trim();
            let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text))
                .ok()
                .and_then(|b| k256::ecdsa::SigningKey::from_slice(&b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("{path} does not hold a private key (64 hex digits)")
                })?;
            Some(bytes)
        }
        None => None,
    };
    let mnemonic = read_secret(&mnemonic_file)?;
    let passphrase = match passphrase_file {
        Some(path) => read_secret(&path)?,
        None => zeroize::Zeroizing::new(String::new()),
    };
    let passphrase = passphrase.trim_end_matches(['\r', '\n']);
    let signed = sweep::tron::sign::sign(
        &parsed,
        &mnemonic,
        passphrase,
        staking_key.as_ref(),
        chrono::Utc::now(),
    )?;
    write_output(out.as_deref(), &serde_json::to_string_pretty(&signed)?)?;
    eprintln!(
        "{} transfers signed ({} delegations); the plan expires at {}",
        signed.transfers.len(),
        signed.delegations.len(),
        parsed.expires_at()
    );
    Ok(())
}

fn tron_sweep_config(
    config: &Config,
    mode: Mode,
) -> anyhow::Result<checkout_server::config::TronSweepConfig> {
    config
        .tron_sweeps
        .iter()
        .find(|s| s.mode == mode)
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no [sweep.TRON.{}] table in the configuration",
                mode.as_str()
            )
        })
}

fn sweep_config(
    config: &Config,
    network: &str,
    mode: Mode,
) -> anyhow::Result<checkout_server::config::SweepConfig> {
    let network = checkout_server::domain::network::Network::parse(network)
        .ok_or_else(|| anyhow::anyhow!("--network '{network}' is not a network"))?;
    config
        .sweeps
        .iter()
        .find(|s| s.network == network && s.mode == mode)
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no [sweep.{network}.{}] table in the configuration",
                mode.as_str()
            )
        })
}

async fn sweep_command(command: SweepCommand, config: Config) -> anyhow::Result<()> {
    match command {
        SweepCommand::Authorize { .. } => authorize(command),
        SweepCommand::ImportAuthorizations { file, merchant } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?;
            let parsed: sweep::authorize::AuthorizationFile = serde_json::from_str(&text)
                .with_context(|| format!("{file} is not an authorization file"))?;
            let pool = connect(&config).await?;
            let stored = service_sweeps::import_authorizations(
                &pool,
                merchant,
                config.wallets.evm.as_ref(),
                &parsed,
            )
            .await?;
            print_json(
                json!({ "imported": stored, "chain_id": parsed.chain_id, "delegate": parsed.delegate }),
            );
            Ok(())
        }
        SweepCommand::DeployDelegate { network, mode } => {
            let sweep = sweep_config(&config, &network, mode)?;
            let pool = connect(&config).await?;
            let state = AppState::new(pool, config);
            let sweeper = sweep::sweeper::Sweeper::new(&state, &sweep)?;
            let address = sweeper.deploy_delegate().await?;
            print_json(json!({ "delegate": address, "treasury": sweep.treasury }));
            Ok(())
        }
        SweepCommand::Sign { .. } => sign_plan(command),
        SweepCommand::Plan { network, mode, out } => {
            if !network.eq_ignore_ascii_case("TRON") {
                anyhow::bail!("sweep plan is for TRON (EVM networks: sweep run)");
            }
            let sweep = tron_sweep_config(&config, mode)?;
            let pool = connect(&config).await?;
            let plan = service_sweeps::tron_plan(&pool, &config, &sweep).await?;
            write_output(out.as_deref(), &serde_json::to_string_pretty(&plan)?)?;
            eprintln!(
                "{} addresses, {} USDT; {} activations; energy {} ({}): {} TRX, or {} TRX burned; sign before {}",
                plan.totals.addresses,
                plan.totals.amount,
                plan.totals.activations,
                plan.totals.energy,
                plan.energy_mode.as_str(),
                plan.totals.cost_trx,
                plan.totals.cost_burn_trx,
                plan.expires_at()
            );
            for warning in &plan.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        SweepCommand::Broadcast { signed } => {
            let text = std::fs::read_to_string(&signed)
                .with_context(|| format!("cannot read {signed}"))?;
            let parsed: sweep::tron::sign::SignedPlan = serde_json::from_str(&text)
                .with_context(|| format!("{signed} is not a signed TRON sweep plan"))?;
            let mode = if parsed.plan.livemode {
                Mode::Live
            } else {
                Mode::Test
            };
            let sweep = tron_sweep_config(&config, mode)?;
            let pool = connect(&config).await?;
            let state = AppState::new(pool, config);
            let broadcaster = sweep::tron::broadcast::Broadcaster::new(&state, &sweep)?;
            let report = broadcaster.broadcast(&parsed).await?;
            let mut out =
                checkout_server::views::sweep_json(&report.sweep, &report.items, &report.steps);
            out["left_out"] = json!(report.left_out);
            out["energy_outstanding"] = json!(report.energy_outstanding());
            print_json(out);
            Ok(())
        }
        SweepCommand::Run { network, mode } => {
            let sweep = sweep_config(&config, &network, mode)?;
            let pool = connect(&config).await?;
            let state = AppState::new(pool, config);
            let sweeper = sweep::sweeper::Sweeper::new(&state, &sweep)?;
            let poll = state.config.network(sweep.network, mode).poll_interval;
            let (mut sent, mut settled) = (Vec::new(), Vec::new());
            loop {
                let report = sweeper.tick().await?;
                if report.busy {
                    anyhow::bail!(
                        "another process is sweeping {network}/{} right now",
                        mode.as_str()
                    );
                }
                sent.extend(report.sent);
                settled.extend(report.settled);
                if report.in_flight == 0 {
                    print_json(json!({
                        "sent": sent, "settled": settled,
                        "below_minimum": report.below_minimum,
                        "unauthorized": report.unauthorized, "stale": report.stale,
                        "gas_price_too_high": report.gas_price_too_high,
                        "given_up": report.given_up,
                    }));
                    return Ok(());
                }
                tokio::time::sleep(poll.max(std::time::Duration::from_millis(200))).await;
            }
        }
    }
}

const DATA_DIR: &str = ".data";

async fn serve(mut config: Config, demo: bool) -> anyhow::Result<()> {
    let mut local_pg = None;
    if demo {
        startup::enable_demo_networks(&mut config);
        // The demo runs on the developer's machine: webhooks and logos may point at it.
        config.webhooks.allow_private_targets = true;
        if config.database_url_is_default
            && db::connect_admin_probe(&config.database_url).await.is_err()
        {
            let bin = localdb::find_binaries().ok_or_else(|| {
                anyhow::anyhow!(
                    "no PostgreSQL answers at {} and none is installed here: run `docker compose up -d db` (or install PostgreSQL) and try again",
                    config.database_url
                )
            })?;
            eprintln!(
                "No PostgreSQL at {}; starting a private one under ./{DATA_DIR}/postgres",
                config.database_url
            );
            let pg =
                tokio::task::spawn_blocking(move || LocalPostgres::start(bin, Path::new(DATA_DIR)))
                    .await??;
            config.database_url = pg.url();
            local_pg = Some(pg);
        }
    }
    let result = serve_with(config, demo).await;
    if let Some(pg) = local_pg {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    result
}

async fn serve_with(config: Config, demo: bool) -> anyhow::Result<()> {
    let pool = connect(&config).await.map_err(|e| {
        if config.database_url_is_default {
            e.context("is PostgreSQL running? `docker compose up -d db` starts one")
        } else {
            e
        }
    })?;
    let bind_addr = config.bind_addr;
    let mut config = config;
    if config.base_url_is_default && bind_addr.port() != 0 {
        // Session URLs must point at this server: http://localhost:<the port it listens on>.
        config.base_url = format!("http://localhost:{}", bind_addr.port());
    }
    let metrics_addr = config.metrics_addr;
    let workers_db = db::connect(&config.database_url).await?;
    let state = AppState::with_pools(pool.clone(), workers_db, config);
    let app = Application::bind(state.clone(), bind_addr).await?;
    if demo {
        print_demo(&pool, app.local_addr()).await?;
    }
    let shutdown = CancellationToken::new();
    startup::cancel_on_signal(shutdown.clone());
    if let Some(addr) = metrics_addr {
        match startup::serve_metrics(&state, addr, shutdown.clone()).await {
            Ok(_) => {}
            // Only the default address (often Prometheus's own port) may be given up.
            Err(e) if state.config.metrics_addr_is_default => {
                tracing::warn!(error = %e, "serving without metrics: set METRICS_ADDR to serve them")
            }
            Err(e) => return Err(e),
        }
    }
    let workers = startup::spawn_workers(&state, shutdown.clone())?;
    let served = app.run(shutdown.clone()).await;
    shutdown.cancel();
    for worker in workers {
        worker.await?;
    }
    served?;
    pool.close().await;
    state.workers_db.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn print_demo(pool: &sqlx::PgPool, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let key_file = Path::new(DATA_DIR).join("demo-test-key");
    let known = std::fs::read_to_string(&key_file).ok();
    let (merchant, key) = merchants::ensure_demo(pool, known.as_deref().map(str::trim)).await?;
    if known.as_deref().map(str::trim) != Some(key.expose_secret()) {
        std::fs::create_dir_all(DATA_DIR)?;
        std::fs::write(&key_file, key.expose_secret())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    // A closed stdout (the reader went away) must not take the server down.
    let _ = writeln!(
        std::io::stdout(),
        r#"
Demo merchant "{name}" ({id}), test mode, networks TRON and BSC (simulated).
Test key: {key}
Webhooks and logos may point at private addresses (webhooks.allow_private_targets is on
for the demo: never run a shared server this way).

Create a checkout session:

curl -s http://{host}/v1/checkout/sessions \
  -H "Authorization: Bearer {key}" \
  -H "Content-Type: application/json" \
  -d '{{"pricing_amount":"10.50","pricing_currency":"USD","currency":"USDT","network":"TRON","success_url":"https://example.com/success","cancel_url":"https://example.com/cancel","client_reference_id":"order_001"}}'

Open the session's "url" in a browser for the payment page, then pay it (test mode):

curl -s -X POST http://{host}/v1/test_helpers/checkout/sessions/SESSION_ID/simulate_payment \
  -H "Authorization: Bearer {key}" \
  -H "Content-Type: application/json" -d '{{"amount":"10.5"}}'
"#,
        name = merchant.name,
        id = merchant.id,
        key = key.expose_secret(),
    );
    Ok(())
}
