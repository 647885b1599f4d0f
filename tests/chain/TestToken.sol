// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A minimal ERC-20 for the chain tests: anyone may mint; `transfer` reverts when the sender
/// lacks the balance or when the recipient is blocked (to produce failed transactions).
contract TestToken {
    uint8 public immutable decimals;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => bool) public blocked;

    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor(uint8 decimals_) {
        decimals = decimals_;
    }

    function mint(address to, uint256 value) external {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    /// `count` minted transfers of `value` to `to` in one transaction (a dust flood).
    function scatter(address to, uint256 value, uint256 count) external {
        for (uint256 i = 0; i < count; i++) {
            emit Transfer(msg.sender, to, value);
        }
        balanceOf[to] += value * count;
        totalSupply += value * count;
    }

    /// Several transfers in one transaction (an exchange's batch payout).
    function transferMany(address[] calldata to, uint256[] calldata values) external {
        for (uint256 i = 0; i < to.length; i++) {
            require(balanceOf[msg.sender] >= values[i], "balance");
            balanceOf[msg.sender] -= values[i];
            balanceOf[to[i]] += values[i];
            emit Transfer(msg.sender, to[i], values[i]);
        }
    }

    function setBlocked(address who, bool value) external {
        blocked[who] = value;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        require(balanceOf[msg.sender] >= value, "balance");
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        require(!blocked[to], "blocked");
        return true;
    }
}
