crate::domain::names::string_enum! {
    /// The webhook event types of the API, exactly as spelled there.
    pub enum EventType ("an event type") {
        Completed = "session.completed", Expired = "session.expired",
        Underpaid = "session.underpaid", LatePayment = "session.late_payment",
        Blocked = "session.blocked", UnexpectedPayment = "session.unexpected_payment",
        SweepCompleted = "sweep.completed",
    }
}

crate::domain::names::string_enum! {
    /// How one delivery attempt went, as the attempt log shows it: coarse on purpose.
    pub enum AttemptOutcome ("an attempt outcome") {
        Delivered = "delivered",
        /// The receiver answered with a non-2xx status.
        HttpError = "http_error",
        Timeout = "timeout",
        /// No answer: refused, unreachable, TLS failure, or a target the guard refused.
        ConnectionFailed = "connection_failed",
    }
}

crate::domain::names::string_enum! {
    /// Where one event's delivery to one endpoint stands.
    pub enum DeliveryStatus ("a delivery status") {
        Pending = "pending", Succeeded = "succeeded", Failed = "failed",
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
