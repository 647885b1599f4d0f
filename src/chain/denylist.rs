//! Sanctioned senders: a confirmed transfer from one blocks its session instead of paying it.

use crate::domain::address::{parse_evm_address, parse_tron_address};
use std::collections::HashSet;
use std::path::Path;

/// Sender addresses as their 20 bytes (TRON and EVM alike).
pub type Denylist = HashSet<[u8; 20]>;

/// Reads a denylist file; an error names the file.
pub fn read(path: &Path) -> Result<Denylist, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|m| format!("{}: {m}", path.display()))
}

/// One address per line (TRON base58 or EVM hex); blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Result<Denylist, String> {
    let mut out = Denylist::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let raw = if entry.starts_with('T') {
            parse_tron_address(entry)
        } else {
            parse_evm_address(entry)
        }
        .map_err(|m| format!("line {}: '{entry}' {m}", i + 1))?;
        out.insert(raw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denylists_take_both_address_forms_and_name_a_bad_line() {
        let list = parse(
            "# sanctioned\n\nTUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH\n0x9858EfFD232B4033E47d90003D41EC34EcaEda94 # note\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        let bad = parse("0x9858EfFD232B4033E47d90003D41EC34EcaEda94\nTnotanaddress\n").unwrap_err();
        assert!(bad.starts_with("line 2:"), "{bad}");
    }
}
