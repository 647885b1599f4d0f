// The reference for our TRON transactions: reads cases as JSON on stdin, builds each with
// tronweb's own protobuf code (offline: no node is asked), and prints for each its raw_data
// hex, txID and signature. Case: { contract_type, value, ref_block_bytes, ref_block_hash,
// expiration, timestamp, fee_limit, private_key }.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { utils } = require("tronweb");

const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const out = input.map((c) => {
  const tx = {
    visible: false,
    raw_data: {
      contract: [{ type: c.contract_type, parameter: { value: c.value } }],
      ref_block_bytes: c.ref_block_bytes,
      ref_block_hash: c.ref_block_hash,
      expiration: c.expiration,
      timestamp: c.timestamp,
      fee_limit: c.fee_limit || undefined,
    },
  };
  const pb = utils.transaction.txJsonToPb(tx);
  const raw_data_hex = utils.transaction.txPbToRawDataHex(pb).toLowerCase();
  const txID = utils.transaction.txPbToTxID(pb).replace(/^0x/, "");
  const signed = utils.crypto.signTransaction(c.private_key, { txID, raw_data: tx.raw_data });
  return { raw_data_hex, txID, signature: signed.signature[0].toLowerCase() };
});
process.stdout.write(JSON.stringify(out));
