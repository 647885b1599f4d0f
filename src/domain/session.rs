use rust_decimal::Decimal;

/// Within this much of the amount a payment counts as exact (API "Lifecycle").
pub const PAID_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

crate::domain::names::string_enum! {
    /// Session statuses, exactly as the API spells them.
    pub enum SessionStatus ("a session status") {
        Pending = "Pending", Underpaid = "Underpaid", Paid = "Paid", Overpaid = "Overpaid",
        Expired = "Expired", Blocked = "Blocked",
    }
}

crate::domain::names::string_enum! {
    /// The chain fact about one transfer to a session (credited or not is a separate flag).
    pub enum TransactionStatus ("a transaction status") {
        Unconfirmed = "Unconfirmed",
        Confirmed = "Confirmed",
        /// Reverted.
        Failed = "Failed",
        /// Gone from the chain, e.g. in a reorg.
        NotFound = "NotFound",
    }
}

impl SessionStatus {
    /// Still waiting for (more) money.
    pub fn is_open(self) -> bool {
        matches!(self, SessionStatus::Pending | SessionStatus::Underpaid)
    }

    /// Paid or Overpaid: fee and net are fixed on what was received.
    pub fn is_paid(self) -> bool {
        matches!(self, SessionStatus::Paid | SessionStatus::Overpaid)
    }
}

/// The status an open session takes once `received` in total has been credited.
pub fn status_after_payment(amount: Decimal, received: Decimal) -> SessionStatus {
    if received > amount {
        SessionStatus::Overpaid
    } else if amount - received <= PAID_TOLERANCE {
        SessionStatus::Paid
    } else {
        SessionStatus::Underpaid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_rule_follows_the_tolerance() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let cases = [
            ("10.5", "10.5", SessionStatus::Paid),
            ("10.5", "10.49", SessionStatus::Paid),
            ("10.5", "10.489999", SessionStatus::Underpaid),
            ("10.5", "10.500001", SessionStatus::Overpaid),
            ("10.5", "0.000001", SessionStatus::Underpaid),
            ("1", "0.99", SessionStatus::Paid),
            ("1", "1.000000000000000001", SessionStatus::Overpaid),
        ];
        for (amount, received, want) in cases {
            assert_eq!(
                status_after_payment(d(amount), d(received)),
                want,
                "{amount} / {received}"
            );
        }
    }

    #[test]
    fn round_trip() {
        for st in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(SessionStatus::parse("pending"), None);
    }
}
