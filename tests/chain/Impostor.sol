// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Claims the treasury like SweepDelegate, but would pay whoever calls: the sweeper must refuse
/// to delegate deposit addresses to it.
contract Impostor {
    address public immutable treasury;

    constructor(address treasury_) {
        treasury = treasury_;
    }

    function sweep(address[] calldata) external {
        payable(msg.sender).transfer(address(this).balance);
    }
}
