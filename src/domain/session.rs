/// Session statuses, exactly as the API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Pending,
    Underpaid,
    Paid,
    Overpaid,
    Expired,
    Blocked,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 6] = [
        SessionStatus::Pending,
        SessionStatus::Underpaid,
        SessionStatus::Paid,
        SessionStatus::Overpaid,
        SessionStatus::Expired,
        SessionStatus::Blocked,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "Pending",
            SessionStatus::Underpaid => "Underpaid",
            SessionStatus::Paid => "Paid",
            SessionStatus::Overpaid => "Overpaid",
            SessionStatus::Expired => "Expired",
            SessionStatus::Blocked => "Blocked",
        }
    }

    /// Still waiting for (more) money.
    pub fn is_open(self) -> bool {
        matches!(self, SessionStatus::Pending | SessionStatus::Underpaid)
    }

    /// Paid or Overpaid: fee and net are fixed on what was received.
    pub fn is_paid(self) -> bool {
        matches!(self, SessionStatus::Paid | SessionStatus::Overpaid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for st in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(SessionStatus::parse("pending"), None);
    }
}
