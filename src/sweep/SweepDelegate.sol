// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// Code that a deposit address delegates to (EIP-7702). Whoever calls it, the address's tokens
/// and native coin can only go to `treasury`, fixed in the code at deploy time. No storage: the
/// delegating address's own storage is never touched. No arbitrary call: the only calls made
/// are `balanceOf`, `transfer(treasury, balance)`, a plain native send to the treasury, and
/// `sweep` itself on the accounts of a batch.
contract SweepDelegate {
    address public immutable treasury;

    constructor(address treasury_) {
        require(treasury_ != address(0), "treasury");
        treasury = treasury_;
    }

    /// Deposit addresses keep accepting the native coin once delegated; it is swept next time.
    receive() external payable {}

    /// Run as a delegated deposit address: sends its whole balance of each token, and of the
    /// native coin, to the treasury. A token whose `transfer` returns nothing (USDT) is accepted.
    function sweep(address[] calldata tokens) external {
        for (uint256 i = 0; i < tokens.length; i++) {
            address token = tokens[i];
            (bool read, bytes memory answer) =
                token.staticcall(abi.encodeWithSelector(0x70a08231, address(this)));
            if (!read || answer.length < 32) continue;
            uint256 balance = abi.decode(answer, (uint256));
            if (balance == 0) continue;
            // A token that refuses (paused, a blacklisted address) keeps its balance here; the
            // other tokens and the native coin are swept regardless.
            (bool sent, bytes memory result) =
                token.call(abi.encodeWithSelector(0xa9059cbb, treasury, balance));
            sent;
            result;
        }
        uint256 native = address(this).balance;
        if (native != 0) {
            // A treasury that refuses the coin keeps it here; the tokens are swept regardless.
            (bool sent,) = treasury.call{value: native}("");
            sent;
        }
    }

    /// Sweeps each account of a batch in one transaction. An account that is not delegated
    /// here (its authorization was skipped), or whose sweep fails, is left as it was and the
    /// batch goes on.
    function sweepMany(address[] calldata accounts, address[] calldata tokens) external {
        bytes memory call = abi.encodeCall(this.sweep, (tokens));
        for (uint256 i = 0; i < accounts.length; i++) {
            (bool ok,) = accounts[i].call(call);
            ok;
        }
    }
}
