//! Profile pictures (`w:profile:picture`): an account sets or removes its
//! picture, anyone asks for anyone's. The sandbox keeps only the picture's
//! id (no media server serves the bytes); a change is told to every
//! connected device as a `picture` notification, the sender's own too.
//! A restricted account's picture is shown only to holders of a privacy
//! token it issued (`401 not-authorized` otherwise, as a hidden picture).

use rand::RngExt as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::{Answer, Asker, IqError};
use crate::conn::attr;
use crate::jid::{UserRef, pn_jid};
use crate::online::Command;
use crate::tokens;

/// `type="set"`: `<picture type="image">` sets, no `<picture>` removes.
pub(super) fn set(asker: &Asker<'_>, iq: &Node) -> Answer {
    let setting = iq.get_optional_child("picture").is_some();
    let id = setting.then(|| {
        rand::rng()
            .random_range(1_000_000_000u64..10_000_000_000)
            .to_string()
    });
    asker.account.lock().picture = id.clone();
    asker.shared.state_changed();
    let jid = pn_jid(asker.account.phone, 0);
    let change = match &id {
        Some(id) => NodeBuilder::new("set").attr("id", id.as_str()),
        None => NodeBuilder::new("delete"),
    };
    let notification = NodeBuilder::new("notification")
        .attr("from", jid.clone())
        .attr("type", "picture")
        .attr("id", crate::deliver::message_id())
        .attr("t", asker.shared.now().to_string())
        .children([change.attr("jid", jid.clone()).attr("author", jid).build()])
        .build();
    for to in asker.shared.online.all() {
        asker
            .shared
            .online
            .send(to, Command::Send(notification.clone()));
    }
    let answer = id.map(|id| NodeBuilder::new("picture").attr("id", id).build());
    Ok(answer.into_iter().collect())
}

/// `type="get" target=JID`: that account's picture, or a 404 inside.
pub(super) fn get(asker: &Asker<'_>, iq: &Node) -> Answer {
    let target = iq.attrs.get("target").and_then(|v| v.to_jid());
    let target = target.ok_or(IqError::BadRequest("target"))?;
    let kind = iq
        .get_optional_child("picture")
        .and_then(|p| attr(p, "type"))
        .unwrap_or_else(|| "image".into());
    let account = UserRef::from_jid(&target).and_then(|u| asker.shared.directory.resolve(u));
    if let Some(owner) = &account
        && !tokens::may_see(asker.shared, asker.account, owner, iq)
    {
        return Err(IqError::NotAuthorized);
    }
    let id = account.and_then(|a| a.lock().picture.clone());
    let node = match id {
        Some(id) => NodeBuilder::new("picture")
            .attr("id", id.as_str())
            .attr("type", kind)
            .attr("url", format!("https://pps.sandbox.invalid/{id}"))
            .attr("direct_path", format!("/pps/{id}"))
            .build(),
        None => NodeBuilder::new("picture")
            .children([NodeBuilder::new("error")
                .attr("code", "404")
                .attr("text", "item-not-found")
                .build()])
            .build(),
    };
    Ok(vec![node])
}
