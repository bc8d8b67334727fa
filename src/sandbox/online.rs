//! Which devices are connected right now, and the way to reach each
//! connection's task: a command channel. Other parts of the sandbox never
//! write to a socket; they ask the connection's task to.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use wacore_binary::Node;

use super::accounts::Phone;
use super::jid::DeviceAddr;

/// What another part of the sandbox can ask of a logged-in connection.
#[derive(Debug)]
pub(crate) enum Command {
    /// The device's outbox has something new: send what it has not sent.
    Flush,
    /// Send this stanza (a `<stream:error>`, say), then close.
    Close(Node),
    /// Send this stanza now; it is not queued (presence, typing).
    Send(Node),
}

pub(crate) type CommandTx = mpsc::UnboundedSender<Command>;
pub(crate) type CommandRx = mpsc::UnboundedReceiver<Command>;

struct Link {
    conn: u64,
    tx: CommandTx,
}

/// The logged-in connections, one per device at most.
#[derive(Default)]
pub(crate) struct Online {
    links: Mutex<BTreeMap<DeviceAddr, Link>>,
}

impl Online {
    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<DeviceAddr, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `conn` as `device`; returns the channel of the
    /// connection it replaces, if any.
    pub fn register(&self, device: DeviceAddr, conn: u64, tx: CommandTx) -> Option<CommandTx> {
        self.links()
            .insert(device, Link { conn, tx })
            .map(|old| old.tx)
    }

    /// Forgets `device` if `conn` is still the connection registered for it.
    pub fn unregister(&self, device: DeviceAddr, conn: u64) {
        let mut links = self.links();
        if links.get(&device).is_some_and(|l| l.conn == conn) {
            links.remove(&device);
        }
    }

    /// Sends a command to the device's connection; false if it is offline.
    pub fn send(&self, device: DeviceAddr, command: Command) -> bool {
        self.links()
            .get(&device)
            .is_some_and(|l| l.tx.send(command).is_ok())
    }

    /// Every connected device.
    pub fn all(&self) -> Vec<DeviceAddr> {
        self.links().keys().copied().collect()
    }

    /// The connected device ids of one account, ascending.
    pub fn devices_of(&self, phone: Phone) -> Vec<u16> {
        let all = DeviceAddr::new(phone, 0)..=DeviceAddr::new(phone, u16::MAX);
        self.links().range(all).map(|(d, _)| d.device).collect()
    }

    pub fn count(&self) -> usize {
        self.links().len()
    }
}
