crate::domain::names::string_enum! {
    /// A suspended sub-merchant cannot create sessions.
    pub enum SubMerchantStatus ("a sub-merchant status") {
        Active = "active", Suspended = "suspended",
    }
}
