use super::money::Token;

crate::domain::names::string_enum! {
    pub enum ChainFamily ("a chain family") {
        Tron = "tron", Evm = "evm", Solana = "solana",
    }
}

crate::domain::names::string_enum! {
    /// Any letter case is accepted.
    pub enum Network ("a network", ignore_case) {
        Tron = "TRON", Solana = "SOLANA", Bsc = "BSC", Ethereum = "ETHEREUM",
        Polygon = "POLYGON", Arbitrum = "ARBITRUM", Optimism = "OPTIMISM", Base = "BASE",
    }
}

/// Built-in facts about a token on a network.
#[derive(Debug, Clone, Copy)]
pub struct TokenDefault {
    pub token: Token,
    pub contract: &'static str,
    pub decimals: u8,
}

/// Built-in facts about a network (mainnet unless stated).
#[derive(Debug, Clone, Copy)]
pub struct NetworkDefaults {
    pub chain_id: Option<u64>,
    pub confirmations: u32,
    pub tokens: &'static [TokenDefault],
}

const fn usdt(contract: &'static str, decimals: u8) -> TokenDefault {
    TokenDefault {
        token: Token::Usdt,
        contract,
        decimals,
    }
}

const fn usdc(contract: &'static str, decimals: u8) -> TokenDefault {
    TokenDefault {
        token: Token::Usdc,
        contract,
        decimals,
    }
}

const TRON_TOKENS: &[TokenDefault] = &[usdt("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", 6)];
const NILE_TOKENS: &[TokenDefault] = &[usdt("TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf", 6)];
const ETHEREUM_TOKENS: &[TokenDefault] = &[
    usdt("0xdAC17F958D2ee523a2206206994597C13D831ec7", 6),
    usdc("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6),
];
const BSC_TOKENS: &[TokenDefault] = &[
    usdt("0x55d398326f99059fF775485246999027B3197955", 18),
    usdc("0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d", 18),
];
const POLYGON_TOKENS: &[TokenDefault] = &[
    usdt("0xc2132D05D31c914a87C6611C10748AEb04B58e8F", 6),
    usdc("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6),
];
const ARBITRUM_TOKENS: &[TokenDefault] = &[
    usdt("0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9", 6),
    usdc("0xaf88d065e77c8cC2239327C5EDb3A432268e5831", 6),
];
const OPTIMISM_TOKENS: &[TokenDefault] = &[
    usdt("0x94b008aA00579c1307B0EF2c499aD98a8ce58e58", 6),
    usdc("0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85", 6),
];
const BASE_TOKENS: &[TokenDefault] = &[
    usdt("0xfde4C96c8593536E31F229EA8f37b2ADa2699bb2", 6),
    usdc("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6),
];
const SOLANA_TOKENS: &[TokenDefault] = &[
    usdt("Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6),
    usdc("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
];

impl Network {
    pub fn family(self) -> ChainFamily {
        match self {
            Network::Tron => ChainFamily::Tron,
            Network::Solana => ChainFamily::Solana,
            _ => ChainFamily::Evm,
        }
    }

    /// Mainnet defaults of the contract's network table.
    ///
    /// TRON's `/jsonrpc` answers `eth_chainId` with the last 4 bytes of its genesis block id
    /// (java-tron `TronJsonRpcImpl::ethChainId`; developers.tron.network, eth_chainId).
    pub fn mainnet(self) -> NetworkDefaults {
        let (chain_id, confirmations, tokens): (Option<u64>, u32, &'static [TokenDefault]) =
            match self {
                Network::Tron => (Some(TRON_MAINNET_CHAIN_ID), 19, TRON_TOKENS),
                Network::Ethereum => (Some(1), 12, ETHEREUM_TOKENS),
                Network::Bsc => (Some(56), 15, BSC_TOKENS),
                Network::Polygon => (Some(137), 128, POLYGON_TOKENS),
                Network::Arbitrum => (Some(42161), 40, ARBITRUM_TOKENS),
                Network::Optimism => (Some(10), 20, OPTIMISM_TOKENS),
                Network::Base => (Some(8453), 20, BASE_TOKENS),
                Network::Solana => (None, 31, SOLANA_TOKENS),
            };
        NetworkDefaults {
            chain_id,
            confirmations,
            tokens,
        }
    }

    /// Test-mode defaults: TRON means Nile; other networks inherit the mainnet table and are
    /// expected to be overridden by the operator's config.
    pub fn testnet(self) -> NetworkDefaults {
        match self {
            Network::Tron => NetworkDefaults {
                chain_id: Some(TRON_NILE_CHAIN_ID),
                confirmations: 19,
                tokens: NILE_TOKENS,
            },
            other => other.mainnet(),
        }
    }
}

/// `eth_chainId` of TRON mainnet (0x2b6653dc).
pub const TRON_MAINNET_CHAIN_ID: u64 = 0x2b66_53dc;
/// `eth_chainId` of TRON's Nile testnet (0xcd8690dc).
pub const TRON_NILE_CHAIN_ID: u64 = 0xcd86_90dc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_any_case() {
        assert_eq!(Network::parse("tron"), Some(Network::Tron));
        assert_eq!(Network::parse("Bsc"), Some(Network::Bsc));
        assert_eq!(Network::parse("BITCOIN"), None);
        assert_eq!(Network::parse(""), None);
    }

    #[test]
    fn usdc_is_not_on_tron() {
        assert!(Network::Tron
            .mainnet()
            .tokens
            .iter()
            .all(|t| t.token != Token::Usdc));
        assert_eq!(Network::Bsc.mainnet().tokens[0].decimals, 18);
    }
}
