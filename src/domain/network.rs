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

/// When the watcher counts a block as final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finality {
    /// At or below the node's `finalized` block (TRON: the solidified block); `confirmations`
    /// deep while the node refuses the tag.
    Tag,
    /// `confirmations` blocks deep, the block itself counted.
    Depth,
}

/// Built-in facts about a network (mainnet unless stated).
#[derive(Debug, Clone, Copy)]
pub struct NetworkDefaults {
    pub chain_id: Option<u64>,
    pub confirmations: u32,
    pub finality: Finality,
    /// Empty where the network documents no USDT or USDC contract (the operator sets one).
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
    ///
    /// Finality: TRON's `finalized` is its solidified block (java-tron 4.8+); BSC's fast
    /// finality and Polygon's milestones make theirs seconds old. Ethereum's lags about 13
    /// minutes, and a rollup's is its batch's L1 finality (15 minutes or more): there a depth
    /// credits sooner, and a deeper reorg is still caught by the checkpoint check.
    pub fn mainnet(self) -> NetworkDefaults {
        use Finality::{Depth, Tag};
        let (chain_id, confirmations, finality, tokens) = match self {
            Network::Tron => (Some(TRON_MAINNET_CHAIN_ID), 19, Tag, TRON_TOKENS),
            Network::Ethereum => (Some(1), 12, Depth, ETHEREUM_TOKENS),
            Network::Bsc => (Some(56), 15, Tag, BSC_TOKENS),
            Network::Polygon => (Some(137), 128, Tag, POLYGON_TOKENS),
            Network::Arbitrum => (Some(42161), 40, Depth, ARBITRUM_TOKENS),
            Network::Optimism => (Some(10), 20, Depth, OPTIMISM_TOKENS),
            Network::Base => (Some(8453), 20, Depth, BASE_TOKENS),
            Network::Solana => (None, 31, Depth, SOLANA_TOKENS),
        };
        NetworkDefaults {
            chain_id,
            confirmations,
            finality,
            tokens,
        }
    }

    /// Test-mode defaults: each network's public testnet, with its documented test token.
    ///
    /// Sources: TRON Nile USDT, developers.tron.network ("Nile testnet", and
    /// nileex.io); USDC, Circle's "USDC contract addresses" page
    /// (developers.circle.com/stablecoins/usdc-contract-addresses), 6 decimals on every
    /// network. Tether publishes no testnet USDT on EVM chains, and Circle no USDC on BSC
    /// testnet: there the operator names the token (`tokens.USDT = { contract, decimals }`).
    pub fn testnet(self) -> NetworkDefaults {
        let (chain_id, tokens): (Option<u64>, &'static [TokenDefault]) = match self {
            Network::Tron => (Some(TRON_NILE_CHAIN_ID), NILE_TOKENS),
            Network::Bsc => (Some(97), &[]),
            Network::Ethereum => (Some(11_155_111), SEPOLIA_TOKENS),
            Network::Polygon => (Some(80_002), AMOY_TOKENS),
            Network::Arbitrum => (Some(421_614), ARBITRUM_SEPOLIA_TOKENS),
            Network::Optimism => (Some(11_155_420), OP_SEPOLIA_TOKENS),
            Network::Base => (Some(84_532), BASE_SEPOLIA_TOKENS),
            Network::Solana => (None, SOLANA_DEVNET_TOKENS),
        };
        NetworkDefaults {
            chain_id,
            tokens,
            ..self.mainnet()
        }
    }
}

const NILE_TOKENS: &[TokenDefault] = &[usdt("TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf", 6)];
const SEPOLIA_TOKENS: &[TokenDefault] = &[usdc("0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238", 6)];
const AMOY_TOKENS: &[TokenDefault] = &[usdc("0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582", 6)];
const ARBITRUM_SEPOLIA_TOKENS: &[TokenDefault] =
    &[usdc("0x75faf114eafb1BDbe2F0316DF893fd58CE46AA4d", 6)];
const OP_SEPOLIA_TOKENS: &[TokenDefault] = &[usdc("0x5fd84259d66Cd46123540766Be93DFE6D43130D7", 6)];
const BASE_SEPOLIA_TOKENS: &[TokenDefault] =
    &[usdc("0x036CbD53842c5426634e7929541eC2318f3dCF7e", 6)];
const SOLANA_DEVNET_TOKENS: &[TokenDefault] =
    &[usdc("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 6)];

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

    #[test]
    fn test_mode_means_each_networks_testnet() {
        let ids: Vec<Option<u64>> = Network::ALL.iter().map(|n| n.testnet().chain_id).collect();
        for (network, id) in Network::ALL.iter().zip(&ids) {
            if *network != Network::Solana {
                assert_ne!(*id, network.mainnet().chain_id, "{network}");
            }
        }
        assert_eq!(
            Network::Tron.testnet().tokens[0].contract,
            "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
        );
        assert_eq!(Network::Base.testnet().chain_id, Some(84_532));
        assert!(Network::Bsc.testnet().tokens.is_empty(), "none documented");
        for network in Network::ALL {
            for token in network.testnet().tokens {
                assert_eq!(token.decimals, 6, "{network}");
                let mainnet = network.mainnet().tokens.iter().map(|t| t.contract);
                assert!(!mainnet.clone().any(|c| c == token.contract), "{network}");
            }
        }
    }
}
