//! A self-hosted hosted-checkout server for stablecoin payments (IronixPay-compatible API).

pub mod chain;
pub mod config;
pub mod db;
pub mod domain;
pub mod faults;
pub mod http;
pub mod limits;
pub mod localdb;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod state;
pub mod sweep;
pub mod telemetry;
pub mod views;
pub mod webhooks;
pub mod workers;
