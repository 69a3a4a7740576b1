//! What the console shows of devices and sessions (schema version 9 on both backends): one
//! page of devices with every directive and its state, one page of a user's sessions, the
//! revocation of one or all of a user's sessions (audited), and the time a directive first
//! rode an answer to its device.

/// Schema version 9 of both backends, described once: `directives.sent_at` (when the
/// directive first rode an answer to its device), an index of every directive by device, and
/// one of sessions by (user, created_at) for the sessions page.
pub const SCHEMA_VERSION_FLEET: i64 = 9;

/// Most directives listed with one device (the newest).
pub const DIRECTIVES_PER_DEVICE: u32 = 20;

/// Which devices a listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFilter<'a> {
    /// Every device.
    All,
    /// The devices of one user.
    User(&'a str),
    /// One device by id.
    Id(&'a str),
}

impl<'a> DeviceFilter<'a> {
    /// (user, id) as the statements bind them: None matches every row.
    pub(crate) fn columns(self) -> (Option<&'a str>, Option<&'a str>) {
        match self {
            DeviceFilter::All => (None, None),
            DeviceFilter::User(u) => (Some(u), None),
            DeviceFilter::Id(id) => (None, Some(id)),
        }
    }
}

/// Where a directive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveState {
    /// Made, and not yet on any answer to its device.
    Queued,
    /// It has ridden at least one answer to its device (a signed response's
    /// `X-Fieldvault-Directives`, or a login's body), not yet acknowledged.
    Sent,
    /// The device said it carried it out.
    Acknowledged,
}

impl DirectiveState {
    /// `queued`, `sent`, `acknowledged`.
    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveState::Queued => "queued",
            DirectiveState::Sent => "sent",
            DirectiveState::Acknowledged => "acknowledged",
        }
    }
}

/// A directive as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveRecord {
    /// Its id.
    pub jti: String,
    /// `revoke` or `wipe`.
    pub kind: String,
    /// When it was made.
    pub issued_at: u64,
    /// When it first rode an answer to the device.
    pub sent_at: Option<u64>,
    /// When the device acknowledged it.
    pub acked_at: Option<u64>,
}

impl DirectiveRecord {
    /// Where it stands.
    pub fn state(&self) -> DirectiveState {
        match (self.acked_at, self.sent_at) {
            (Some(_), _) => DirectiveState::Acknowledged,
            (None, Some(_)) => DirectiveState::Sent,
            (None, None) => DirectiveState::Queued,
        }
    }
}

/// A session as the console lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its id.
    pub id: String,
    /// Its device.
    pub device_id: String,
    /// The device's name.
    pub device_name: String,
    /// When the login made it.
    pub created_at: u64,
    /// When its newest refresh token was issued (its last refresh, or the login).
    pub refreshed_at: u64,
    /// When it was revoked (None: live).
    pub revoked_at: Option<u64>,
}

/// Which of a user's sessions [`crate::storage::Store::revoke_sessions`] revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions<'a> {
    /// The one with this id (when it is the user's).
    One(&'a str),
    /// Every live one.
    All,
}
