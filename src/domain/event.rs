/// The webhook event types of the API, exactly as spelled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Completed,
    Expired,
    Underpaid,
    LatePayment,
    Blocked,
    UnexpectedPayment,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Completed,
        EventType::Expired,
        EventType::Underpaid,
        EventType::LatePayment,
        EventType::Blocked,
        EventType::UnexpectedPayment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Completed => "session.completed",
            EventType::Expired => "session.expired",
            EventType::Underpaid => "session.underpaid",
            EventType::LatePayment => "session.late_payment",
            EventType::Blocked => "session.blocked",
            EventType::UnexpectedPayment => "session.unexpected_payment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("session.paid"), None);
    }
}
