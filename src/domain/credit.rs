//! What a confirmed transfer does to its session: the crediting rules of the API's
//! "Lifecycle", as a pure function (the caller applies the outcome in one transaction).

use super::money::FeeSchedule;
use super::session::{status_after_payment, SessionStatus};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// How long an underpaid session stays open for a top-up, from the payment that left it short.
pub const UNDERPAID_EXTENSION: chrono::Duration = chrono::Duration::hours(24);

/// The session as it is when the transfer is applied.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub status: SessionStatus,
    pub amount: Decimal,
    pub amount_received: Decimal,
    pub expires_at: DateTime<Utc>,
    pub fees: FeeSchedule,
}

/// A confirmed transfer to the session's address.
#[derive(Debug, Clone)]
pub struct ConfirmedTransfer {
    pub amount: Decimal,
    /// The time of its block; `None` only for rows from before block times were recorded.
    pub block_time: Option<DateTime<Utc>>,
    /// The sender is on the denylist.
    pub blocked: bool,
    /// Another configured token than the session's currency.
    pub unexpected: bool,
}

/// The new totals of a credited session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credited {
    pub status: SessionStatus,
    pub amount_received: Decimal,
    pub fee_amount: Decimal,
    pub net_amount: Decimal,
    /// Set on the payment that makes the session Paid or Overpaid.
    pub paid_at: Option<DateTime<Utc>>,
    /// The Underpaid extension, when this payment leaves the session short.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Added to the session.
    Credit(Credited),
    /// Not credited: the session was already closed, or the transfer's block is after
    /// `expires_at`. `expire` is true when the session still looked open: it becomes Expired.
    Late { expire: bool },
    /// The sender is denylisted and the session was open: it becomes Blocked.
    Block,
    /// Another token than the session's: never credited, reported.
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the session's amount received would overflow")]
pub struct Overflow;

/// Decides what `transfer` does to `session`, at `now`.
pub fn decide(
    session: &SessionState,
    transfer: &ConfirmedTransfer,
    now: DateTime<Utc>,
) -> Result<Decision, Overflow> {
    if transfer.unexpected {
        return Ok(Decision::Unexpected);
    }
    if !session.status.is_open() {
        return Ok(Decision::Late { expire: false });
    }
    // On time or late is the block's time against `expires_at`, whenever it is credited.
    if transfer.block_time.is_some_and(|t| t > session.expires_at) {
        return Ok(Decision::Late { expire: true });
    }
    if transfer.blocked {
        return Ok(Decision::Block);
    }
    let received = session
        .amount_received
        .checked_add(transfer.amount)
        .ok_or(Overflow)?;
    let status = status_after_payment(session.amount, received);
    // Fee and net stay on `amount` until paid, then are fixed on what was received.
    let (fee_amount, net_amount) = session.fees.split(if status.is_paid() {
        received
    } else {
        session.amount
    });
    let expires_at = if status == SessionStatus::Underpaid {
        session.expires_at.max(now + UNDERPAID_EXTENSION)
    } else {
        session.expires_at
    };
    Ok(Decision::Credit(Credited {
        status,
        amount_received: received,
        fee_amount,
        net_amount,
        paid_at: status.is_paid().then_some(now),
        expires_at,
    }))
}

/// Why a confirmed transfer listed on a session was not credited.
pub fn not_credited_reason(credited: bool, late: bool, blocked: bool) -> Option<&'static str> {
    match (credited, blocked, late) {
        (true, _, _) => None,
        (false, true, _) => Some("blocked"),
        (false, false, true) => Some("late"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    fn session(status: SessionStatus, received: &str) -> SessionState {
        SessionState {
            status,
            amount: d("10"),
            amount_received: d(received),
            expires_at: at(30),
            fees: FeeSchedule {
                rate: d("0.005"),
                floor: d("0.1"),
            },
        }
    }

    fn transfer(amount: &str, minute: i64) -> ConfirmedTransfer {
        ConfirmedTransfer {
            amount: d(amount),
            block_time: Some(at(minute)),
            blocked: false,
            unexpected: false,
        }
    }

    #[test]
    fn a_transfer_in_time_is_credited_whenever_it_is_confirmed() {
        // Mined at 29:00, confirmed at 35:00 (after expires_at): still on time.
        let out = decide(
            &session(SessionStatus::Pending, "0"),
            &transfer("10", 29),
            at(35),
        );
        let Ok(Decision::Credit(c)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(c.status, SessionStatus::Paid);
        assert_eq!((c.fee_amount, c.net_amount), (d("0.1"), d("9.9")));
        assert_eq!(c.paid_at, Some(at(35)));
        assert_eq!(c.expires_at, at(30));
    }

    #[test]
    fn a_transfer_mined_after_expires_at_is_late_even_while_the_session_looks_open() {
        for status in [SessionStatus::Pending, SessionStatus::Underpaid] {
            assert_eq!(
                decide(&session(status, "0"), &transfer("10", 31), at(31)),
                Ok(Decision::Late { expire: true })
            );
        }
        // Exactly at expires_at is still on time.
        assert!(matches!(
            decide(
                &session(SessionStatus::Pending, "0"),
                &transfer("10", 30),
                at(31)
            ),
            Ok(Decision::Credit(_))
        ));
    }

    #[test]
    fn closed_sessions_never_change() {
        for status in [
            SessionStatus::Paid,
            SessionStatus::Overpaid,
            SessionStatus::Expired,
            SessionStatus::Blocked,
        ] {
            assert_eq!(
                decide(&session(status, "10"), &transfer("5", 1), at(2)),
                Ok(Decision::Late { expire: false })
            );
        }
    }

    #[test]
    fn underpaid_extends_and_fees_stay_on_the_amount_until_paid() {
        let out = decide(
            &session(SessionStatus::Pending, "0"),
            &transfer("4", 10),
            at(10),
        );
        let Ok(Decision::Credit(c)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(c.status, SessionStatus::Underpaid);
        assert_eq!(c.expires_at, at(10) + UNDERPAID_EXTENSION);
        assert_eq!((c.fee_amount, c.net_amount), (d("0.1"), d("9.9")));
        assert_eq!(c.paid_at, None);
        let out = decide(
            &session(SessionStatus::Underpaid, "4"),
            &transfer("7", 20),
            at(20),
        );
        let Ok(Decision::Credit(c)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(c.status, SessionStatus::Overpaid);
        assert_eq!(c.amount_received, d("11"));
        assert_eq!((c.fee_amount, c.net_amount), (d("0.1"), d("10.9")));
    }

    #[test]
    fn denylisted_and_unexpected_transfers_are_never_credited() {
        let mut t = transfer("10", 1);
        t.blocked = true;
        assert_eq!(
            decide(&session(SessionStatus::Pending, "0"), &t, at(1)),
            Ok(Decision::Block)
        );
        let mut t = transfer("10", 1);
        t.unexpected = true;
        assert_eq!(
            decide(&session(SessionStatus::Pending, "0"), &t, at(1)),
            Ok(Decision::Unexpected)
        );
    }

    #[test]
    fn a_denylisted_sender_after_expires_at_expires_the_session_rather_than_blocking_it() {
        // The session was over at expires_at; what came later is late, whoever sent it (the
        // transfer is still listed with the reason "blocked").
        let mut t = transfer("10", 31);
        t.blocked = true;
        assert_eq!(
            decide(&session(SessionStatus::Pending, "0"), &t, at(32)),
            Ok(Decision::Late { expire: true })
        );
        assert_eq!(not_credited_reason(false, true, true), Some("blocked"));
    }

    #[test]
    fn an_overflowing_total_is_an_error_not_a_panic() {
        let s = SessionState {
            amount_received: Decimal::MAX,
            ..session(SessionStatus::Underpaid, "0")
        };
        assert_eq!(decide(&s, &transfer("1", 1), at(1)), Err(Overflow));
    }

    #[test]
    fn reasons() {
        assert_eq!(not_credited_reason(true, false, false), None);
        assert_eq!(not_credited_reason(false, true, false), Some("late"));
        assert_eq!(not_credited_reason(false, true, true), Some("blocked"));
        assert_eq!(not_credited_reason(false, false, false), None);
    }
}
