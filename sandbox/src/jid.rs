//! Addresses inside the sandbox and their JID spellings.
//!
//! A device is `(phone, device id)`; on the wire it is written as a phone
//! number JID (`PN:D@s.whatsapp.net`) or a LID JID (`LID:D@lid`). This module
//! only converts; which accounts exist is `accounts`' business.

use wacore_binary::{Jid, Server};

use super::accounts::{Lid, Phone};

/// One device of one account: device 0 is the simulated phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DeviceAddr {
    pub phone: Phone,
    pub device: u16,
}

impl DeviceAddr {
    pub fn new(phone: Phone, device: u16) -> Self {
        Self { phone, device }
    }
}

impl std::fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.phone, self.device)
    }
}

/// `PN@s.whatsapp.net`, or `PN:D@s.whatsapp.net` for a companion.
pub(crate) fn pn_jid(phone: Phone, device: u16) -> Jid {
    Jid::pn_device(phone.to_string(), device)
}

/// `LID@lid`, or `LID:D@lid` for a companion.
pub(crate) fn lid_jid(lid: Lid, device: u16) -> Jid {
    Jid::lid_device(lid.to_string(), device)
}

/// The server's own address, `s.whatsapp.net`.
pub(crate) fn server_jid() -> Jid {
    Jid::new("", Server::Pn)
}

/// A user named in a query: a phone number or a LID, with its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserRef {
    Phone(Phone, u16),
    Lid(Lid, u16),
}

impl UserRef {
    /// Reads a JID the client sent; `None` for groups, servers and the like.
    pub fn from_jid(jid: &Jid) -> Option<Self> {
        let number: u64 = jid.user.parse().ok()?;
        if jid.is_pn() {
            Phone::from_number(number).map(|p| UserRef::Phone(p, jid.device))
        } else if jid.is_lid() {
            Some(UserRef::Lid(Lid(number), jid.device))
        } else {
            None
        }
    }

    pub fn device(self) -> u16 {
        match self {
            UserRef::Phone(_, d) | UserRef::Lid(_, d) => d,
        }
    }
}
