// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Like Ethereum's USDT: `transfer` returns nothing (not even `bool`), which a caller that
/// expects the ERC-20 return value fails to decode. Anyone may mint.
contract TetherLikeToken {
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    function decimals() external pure returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 value) external {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function transfer(address to, uint256 value) external {
        require(balanceOf[msg.sender] >= value, "balance");
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
    }
}
