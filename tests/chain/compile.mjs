// Compiles TestToken.sol with solc-js (offline) and prints {"abi": [...], "bytecode": "0x..."}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const solc = createRequire(import.meta.url)("solc");
const dir = new URL(".", import.meta.url);
const input = {
  language: "Solidity",
  sources: { "TestToken.sol": { content: readFileSync(new URL("TestToken.sol", dir), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "paris",
    outputSelection: { "*": { TestToken: ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contract = output.contracts["TestToken.sol"].TestToken;
process.stdout.write(JSON.stringify({ abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object }));
