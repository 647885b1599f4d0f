//! Integration tests over real HTTP against a real Postgres.

mod bad_input;
mod browser;
mod chain_support;
mod cli;
mod common;
mod conformance;
mod hosted;
mod idempotency;
mod metrics;
mod migrations;
mod money_safety;
mod openapi;
mod pricing;
mod public_surface;
mod rate_limits;
mod sessions;
mod sweeps;
mod tron_replay;
mod tron_signing;
mod tron_sweeps;
mod watcher;
mod webhooks;
