//! Which devices are connected right now, and the way to reach each
//! connection's task: a command channel. Other parts of the sandbox never
//! write to a socket; they ask the connection's task to.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

/// One logged-in connection's life, as `GET /sandbox/connections` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Connection)]
pub(crate) struct Login {
    /// `phone:device`.
    pub device: String,
    /// The connection's number, in the order connections came.
    pub conn: u64,
    /// When it logged in (unix ms).
    pub opened_ms: u64,
    /// When it ended (unix ms); `null` while it is logged in.
    #[schema(required = true)]
    pub closed_ms: Option<u64>,
    /// It logged in while another connection of the same device was still
    /// logged in (that one was then replaced): two clients drove one device.
    pub overlapped: bool,
}

/// Logins kept for `GET /sandbox/connections`, newest last.
const LOG_SIZE: usize = 10_000;

/// The logged-in connections, one per device at most.
#[derive(Default)]
pub(crate) struct Online {
    links: Mutex<BTreeMap<DeviceAddr, Link>>,
    log: Mutex<VecDeque<Login>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Online {
    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<DeviceAddr, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `conn` as `device`; returns the channel of the
    /// connection it replaces, if any.
    pub fn register(&self, device: DeviceAddr, conn: u64, tx: CommandTx) -> Option<CommandTx> {
        let old = self.links().insert(device, Link { conn, tx });
        let mut log = self.log();
        if log.len() == LOG_SIZE {
            log.pop_front();
        }
        log.push_back(Login {
            device: device.to_string(),
            conn,
            opened_ms: now_ms(),
            closed_ms: None,
            overlapped: old.is_some(),
        });
        old.map(|old| old.tx)
    }

    /// Every login kept, oldest first.
    pub fn logins(&self) -> Vec<Login> {
        self.log().iter().cloned().collect()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, VecDeque<Login>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `device` if `conn` is still the connection registered for it.
    pub fn unregister(&self, device: DeviceAddr, conn: u64) {
        {
            let mut links = self.links();
            if links.get(&device).is_some_and(|l| l.conn == conn) {
                links.remove(&device);
            }
        }
        if let Some(login) = self.log().iter_mut().rev().find(|l| l.conn == conn) {
            login.closed_ms = Some(now_ms());
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
