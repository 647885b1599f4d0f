//! Types that parse, don't validate: holding one means the value is valid.

pub mod address;
pub mod api_key;
pub mod credit;
pub mod event;
pub mod ids;
pub mod money;
pub mod names;
pub mod network;
pub mod session;
pub mod sub_merchant;
pub mod urls;
