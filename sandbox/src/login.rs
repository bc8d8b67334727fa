//! A registered device's session: authentication against the account, the
//! `<success>` stanza, then the stanza loop until the connection ends.
//!
//! Order at login (the client waits on each step): `<success>` with the
//! device's LID; the client's passive/active iq is answered; the device's
//! outbox is delivered with `offline="1"`; `<ib><offline count=N/>` closes
//! that. After it, the outbox is delivered live as it fills.
//!
//! In the loop, iqs go to `iq`, messages to `messages`, receipts to
//! `receipts`; the device's acks settle the receipts and notifications
//! queued for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp::ClientPayload;

use super::accounts::{Account, Kind, Phone};
use super::conn::{ConnError, NodeChannel, attr};
use super::iq::{self, Asker};
use super::jid::{DeviceAddr, lid_jid};
use super::online::{Command, CommandRx};
use super::server::Shared;
use super::{messages, presence, receipts};

/// Why a login is refused; the client is told `<failure reason="401">`.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no account for this number")]
    UnknownAccount,
    #[error("the device was unlinked")]
    Removed,
    #[error("no such device")]
    UnknownDevice,
    #[error("the Noise key is not the device's")]
    WrongKey,
}

/// Serves a login until the connection ends.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    channel: &mut NodeChannel,
    conn: u64,
    noise_key: [u8; 32],
    payload: ClientPayload,
) -> Result<(), ConnError> {
    let (account, device) = match authenticate(shared, &payload, &noise_key) {
        Ok(found) => found,
        Err(refusal) => {
            tracing::info!(user = ?payload.username, device = ?payload.device, reason = %refusal, "login refused");
            channel.send_last(&logged_out()).await;
            return Ok(());
        }
    };
    let addr = DeviceAddr::new(account.phone, device);
    tracing::Span::current().record("device", tracing::field::display(addr));
    let (tx, commands) = mpsc::unbounded_channel();
    if let Some(old) = shared.online.register(addr, conn, tx) {
        // One connection per device: the older one is told it was replaced.
        let _ = old.send(Command::Close(replaced()));
    }
    shared.counters.logins.fetch_add(1, Ordering::Relaxed);
    tracing::info!("device logged in");
    let mut session = Session {
        shared,
        account: &account,
        device,
        delivered: 0,
        offline_done: false,
        held: Vec::new(),
    };
    let outcome = session.run(channel, commands).await;
    shared.online.unregister(addr, conn);
    outcome
}

fn authenticate(
    shared: &Shared,
    payload: &ClientPayload,
    noise_key: &[u8; 32],
) -> Result<(Arc<Account>, u16), Refusal> {
    let phone = payload
        .username
        .and_then(Phone::from_number)
        .ok_or(Refusal::UnknownAccount)?;
    let account = shared.directory.get(phone).ok_or(Refusal::UnknownAccount)?;
    let device = payload
        .device
        .and_then(|d| u16::try_from(d).ok())
        .ok_or(Refusal::UnknownDevice)?;
    {
        let state = account.lock();
        if state.removed.contains(&device) {
            return Err(Refusal::Removed);
        }
        let record = state.devices.get(&device).ok_or(Refusal::UnknownDevice)?;
        if record.noise_key != *noise_key {
            return Err(Refusal::WrongKey);
        }
    }
    Ok((account, device))
}

/// `<failure reason="401">`: the client reports `LoggedOut` and does not
/// retry, as with a device the phone has removed.
fn logged_out() -> Node {
    NodeBuilder::new("failure")
        .attr("reason", "401")
        .attr("location", "sandbox")
        .build()
}

fn replaced() -> Node {
    NodeBuilder::new("stream:error")
        .children([NodeBuilder::new("conflict")
            .attr("type", "replaced")
            .build()])
        .build()
}

struct Session<'a> {
    shared: &'a Shared,
    account: &'a Arc<Account>,
    device: u16,
    /// Outbox sequence number sent on this connection so far.
    delivered: u64,
    /// Whether the offline batch (and its `<ib><offline>`) went out.
    offline_done: bool,
    /// Live stanzas that came before the offline batch went out.
    held: Vec<Node>,
}

impl Session<'_> {
    async fn run(
        &mut self,
        channel: &mut NodeChannel,
        mut commands: CommandRx,
    ) -> Result<(), ConnError> {
        channel.send(&self.success()).await?;
        let idle = self.shared.config.idle_timeout;
        loop {
            tokio::select! {
                node = tokio::time::timeout(idle, channel.recv()) => {
                    let node = node.map_err(|_| ConnError::TimedOut("idle connection"))??;
                    self.handle(channel, &node).await?;
                }
                command = commands.recv() => match command {
                    Some(Command::Flush) => self.flush(channel, false).await?,
                    Some(Command::Send(node)) => self.send_live(channel, node).await?,
                    Some(Command::Close(last)) => {
                        channel.send_last(&last).await;
                        return Ok(());
                    }
                    None => return Ok(()),
                },
            }
        }
    }

    fn success(&self) -> Node {
        let created = self.account.lock().created_at;
        NodeBuilder::new("success")
            .attr("t", self.shared.now().to_string())
            .attr("lid", lid_jid(self.account.lid, self.device))
            .attr("props", "1")
            .attr("abprops", "1")
            .attr("location", "sandbox")
            .attr("creation", created.to_string())
            .build()
    }

    async fn handle(&mut self, channel: &mut NodeChannel, node: &Node) -> Result<(), ConnError> {
        match node.tag.as_ref() {
            "iq" => {
                let asker = Asker {
                    shared: self.shared,
                    account: self.account,
                    device: self.device,
                };
                if let Some(answer) = iq::answer(&asker, node) {
                    channel.send(&answer).await?;
                }
                if is_going_active(node) && !self.offline_done {
                    self.flush(channel, true).await?;
                }
                Ok(())
            }
            "receipt" => {
                let answer = receipts::handle(self.shared, self.account, self.device, node).await;
                channel.send(&answer).await
            }
            "message" => {
                let answer = messages::relay(self.shared, self.account, self.device, node).await;
                channel.send(&answer).await
            }
            "ack" => {
                self.settle_ack(node);
                Ok(())
            }
            "presence" => {
                presence::handle_presence(self.shared, self.account, self.device, node);
                Ok(())
            }
            "chatstate" => {
                presence::handle_chatstate(self.shared, self.account, self.device, node);
                Ok(())
            }
            "ib" => {
                tracing::debug!(tag = %node.tag, "noted");
                Ok(())
            }
            other => Err(ConnError::Protocol(format!("unknown stanza <{other}>"))),
        }
    }

    /// Sends the outbox items this connection has not sent; the first time
    /// (`offline`), marks them offline and ends with `<ib><offline>`.
    async fn flush(&mut self, channel: &mut NodeChannel, offline: bool) -> Result<(), ConnError> {
        if !offline && !self.offline_done {
            return Ok(()); // the offline batch will carry it
        }
        let pending = {
            let state = self.account.lock();
            let device = state.devices.get(&self.device);
            device
                .map(|d| d.outbox.after(self.delivered))
                .unwrap_or_default()
        };
        for item in &pending {
            let mut node = item.node.clone();
            if offline {
                node.attrs.insert("offline", "1");
            }
            channel.send(&node).await?;
            self.delivered = item.seq;
        }
        if offline {
            self.offline_done = true;
            let marker = NodeBuilder::new("offline")
                .attr("count", pending.len().to_string())
                .build();
            channel
                .send(&NodeBuilder::new("ib").children([marker]).build())
                .await?;
            // Presence and typing are live stanzas: after the offline batch.
            let addr = DeviceAddr::new(self.account.phone, self.device);
            let mut live = self.shared.presence.take_waiting(addr);
            live.append(&mut self.held);
            for node in live {
                channel.send(&node).await?;
            }
        }
        Ok(())
    }

    /// A live stanza: sent now, or after the offline batch if that has
    /// not gone out yet (the client takes live stanzas only after it).
    async fn send_live(&mut self, channel: &mut NodeChannel, node: Node) -> Result<(), ConnError> {
        if self.offline_done {
            channel.send(&node).await
        } else {
            self.held.push(node);
            Ok(())
        }
    }

    /// The device's ack of a forwarded receipt or a notification takes it
    /// out of its queue. (Acks of messages settle nothing: only a receipt
    /// confirms those.)
    fn settle_ack(&self, ack: &Node) {
        if attr(ack, "class").as_deref() == Some("message") {
            return;
        }
        let Some(id) = attr(ack, "id") else {
            return;
        };
        let mut state = self.account.lock();
        if let Some(device) = state.devices.get_mut(&self.device) {
            device.outbox.take(&id, Kind::Acked);
        }
        self.shared.state_changed();
    }
}

/// `<iq xmlns="passive" type="set"><active/></iq>`: the client leaves passive
/// mode and is ready for its offline queue.
fn is_going_active(iq: &Node) -> bool {
    attr(iq, "xmlns").as_deref() == Some("passive") && iq.get_optional_child("active").is_some()
}
