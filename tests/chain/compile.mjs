// Compiles one contract with solc-js (offline) and prints {"abi": [...], "bytecode": "0x..."}.
// Usage: node compile.mjs [SOURCE.sol [CONTRACT]]; the default is TestToken.sol's TestToken.
// The settings here are the ones the committed SweepDelegate bytecode was built with.
import { readFileSync } from "node:fs";
import { basename, resolve } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
const solc = createRequire(import.meta.url)("solc");
const here = fileURLToPath(new URL(".", import.meta.url));
const path = resolve(here, process.argv[2] || "TestToken.sol");
const name = basename(path);
const contractName = process.argv[3] || "TestToken";
const input = {
  language: "Solidity",
  sources: { [name]: { content: readFileSync(path, "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "paris",
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { [contractName]: ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contract = output.contracts[name][contractName];
process.stdout.write(
  JSON.stringify({ compiler: solc.version(), abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object }),
);
