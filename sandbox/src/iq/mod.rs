//! Answers to the client's `<iq>` queries (SANDBOX.md, "Verified: login to
//! `Connected`"). Each namespace gets the answer the client parses; what
//! the sandbox does not implement gets an error iq with code 501 and a log
//! line, never silence, because a client waits on every iq it sends.
//!
//! Answers are computed synchronously under the account's lock; nothing
//! here writes to a socket.

mod app_state;
mod keys;
mod picture;
mod usync;

use std::sync::atomic::Ordering;

use rand::RngExt as _;
use wacore::protocol::ProtocolNode as _;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::accounts::{Account, Behaviour};
use super::conn::attr;
use super::jid::{UserRef, server_jid};
use super::pairing;
use super::server::Shared;

/// Who is asking: a logged-in device of an account.
pub(crate) struct Asker<'a> {
    pub shared: &'a Shared,
    pub account: &'a Account,
    pub device: u16,
}

/// Why an iq gets an error answer.
#[derive(Debug)]
pub(crate) enum IqError {
    NotImplemented,
    BadRequest(&'static str),
    NotFound,
    NotAcceptable(&'static str),
    NotAuthorized,
}

impl IqError {
    fn detail(&self) -> &'static str {
        match self {
            IqError::NotImplemented => "not implemented in the sandbox",
            IqError::BadRequest(what) | IqError::NotAcceptable(what) => what,
            IqError::NotFound => "no record for the asking device",
            IqError::NotAuthorized => "the asker holds no privacy token for this account",
        }
    }

    fn code_text(&self) -> (u16, &'static str) {
        match self {
            IqError::NotImplemented => (501, "feature-not-implemented"),
            IqError::BadRequest(_) => (400, "bad-request"),
            IqError::NotFound => (404, "item-not-found"),
            IqError::NotAcceptable(_) => (406, "not-acceptable"),
            IqError::NotAuthorized => (401, "not-authorized"),
        }
    }
}

type Answer = Result<Vec<Node>, IqError>;

/// The answer to an iq from a logged-in device; `None` for the client's own
/// results and errors (answers to our requests, which need no answer).
pub(crate) fn answer(asker: &Asker<'_>, iq: &Node) -> Option<Node> {
    let kind = attr(iq, "type").unwrap_or_default();
    if kind == "result" || kind == "error" {
        return None;
    }
    let xmlns = attr(iq, "xmlns").unwrap_or_default();
    let first = iq
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.as_ref());
    let answer = match (xmlns.as_str(), kind.as_str(), first.unwrap_or("")) {
        ("passive", "set", _) | ("w:p", "get", _) => Ok(vec![]),
        ("urn:xmpp:whatsapp:dirty", "set", _) => Ok(vec![]),
        ("encrypt", "set", "rotate") => keys::rotate(asker, iq),
        ("encrypt", "set", _) => keys::upload(asker, iq),
        ("encrypt", "get", "count") => keys::count(asker),
        ("encrypt", "get", "digest") => keys::digest(asker),
        ("encrypt", "get", "key") => keys::bundles(asker, iq),
        ("usync", "get", "usync") => usync::answer(asker, iq),
        ("abt", "get", "props") => Ok(vec![props(asker.account.lock().behaviour)]),
        ("blocklist", "get", _) => Ok(vec![NodeBuilder::new("list").build()]),
        ("privacy", "get", "privacy") => Ok(vec![privacy()]),
        ("privacy", "set", "tokens") => {
            Ok(vec![super::tokens::issue(asker.shared, asker.account, iq)])
        }
        ("w:sync:app:state", "set", "sync") => Ok(vec![app_state::sync(asker, iq)]),
        ("w:profile:picture", "set", _) => picture::set(asker, iq),
        ("w:profile:picture", "get", _) => picture::get(asker, iq),
        ("status", "set", "status") => {
            super::presence::set_about(asker.shared, asker.account, asker.device, iq);
            Ok(vec![])
        }
        ("md", "set", "remove-companion-device") => remove_companion(asker, iq),
        ("w:m", "set", "media_conn") => Ok(vec![asker.shared.media.conn_node()]),
        _ => Err(IqError::NotImplemented),
    };
    Some(reply(asker.shared, iq, answer))
}

/// The answer to an iq from a client that is not logged in (pairing).
pub(crate) fn answer_unregistered(shared: &Shared, iq: &Node) -> Option<Node> {
    let kind = attr(iq, "type").unwrap_or_default();
    if kind == "result" || kind == "error" {
        return None;
    }
    let answer = match attr(iq, "xmlns").as_deref() {
        Some("w:p") => Ok(vec![]),
        _ => Err(IqError::NotImplemented),
    };
    Some(reply(shared, iq, answer))
}

/// An empty result for `iq`.
pub(crate) fn empty_result(iq: &Node) -> Node {
    result(&attr(iq, "id").unwrap_or_default(), vec![])
}

/// A `400 bad-request` answer to `iq`; `what` names the bad part.
pub(crate) fn bad_request(shared: &Shared, iq: &Node, what: &'static str) -> Node {
    reply(shared, iq, Err(IqError::BadRequest(what)))
}

fn reply(shared: &Shared, iq: &Node, answer: Answer) -> Node {
    let id = attr(iq, "id").unwrap_or_default();
    match answer {
        Ok(children) => result(&id, children),
        Err(e) => {
            if matches!(e, IqError::NotImplemented) {
                shared
                    .counters
                    .unimplemented
                    .fetch_add(1, Ordering::Relaxed);
            }
            let (code, text) = e.code_text();
            tracing::warn!(
                iq = %wacore::xml::DisplayableNode(&summary(iq)),
                code,
                reason = e.detail(),
                "iq answered with an error"
            );
            NodeBuilder::new("iq")
                .attr("from", server_jid())
                .attr("id", id)
                .attr("type", "error")
                .children([NodeBuilder::new("error")
                    .attr("code", code.to_string())
                    .attr("text", text)
                    .build()])
                .build()
        }
    }
}

/// The iq without grandchildren, for a log line of bounded size.
fn summary(iq: &Node) -> Node {
    let children = iq.children().unwrap_or_default().iter().map(|c| Node {
        tag: c.tag.clone(),
        attrs: c.attrs.clone(),
        content: None,
    });
    Node {
        tag: iq.tag.clone(),
        attrs: iq.attrs.clone(),
        content: Some(wacore_binary::NodeContent::Nodes(children.collect())),
    }
}

fn result(id: &str, children: Vec<Node>) -> Node {
    NodeBuilder::new("iq")
        .attr("from", server_jid())
        .attr("id", id)
        .attr("type", "result")
        .children(children)
        .build()
}

/// An id for an iq the server sends.
pub(crate) fn request_id() -> String {
    let n: u32 = rand::rng().random();
    format!("srv.{n:08x}")
}

/// A/B props, refreshed daily. Clients attach the privacy token they hold
/// to every 1:1 message, as WhatsApp has them do; the NCT experiments are
/// on where the account's behaviour turns them on.
fn props(behaviour: Behaviour) -> Node {
    use wacore::iq::abprops::web;
    let experiments = [
        (web::PRIVACY_TOKEN_SENDING_ON_ALL_1_ON_1_MESSAGES, true),
        (web::WA_NCT_TOKEN_SEND_ENABLED, behaviour.nct_send_ab),
        (
            web::WA_NCT_TOKEN_HISTORY_SYNC_ENABLED,
            behaviour.nct_history_ab,
        ),
        (web::WA_NCT_TOKEN_SYNCD_ENABLED, behaviour.nct_syncd_ab),
    ];
    let experiment_props = experiments
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(prop, _)| (prop.code, "1".into()))
        .collect();
    wacore::iq::props::PropsResponse {
        hash: Some("sandbox".into()),
        refresh: Some(86_400),
        experiment_props,
        ..Default::default()
    }
    .into_node()
}

/// Everyone may see everything: WhatsApp's defaults.
fn privacy() -> Node {
    const CATEGORIES: [(&str, &str); 7] = [
        ("last", "all"),
        ("online", "all"),
        ("profile", "all"),
        ("status", "all"),
        ("groupadd", "all"),
        ("readreceipts", "all"),
        ("calladd", "all"),
    ];
    let categories = CATEGORIES.iter().map(|(name, value)| {
        NodeBuilder::new("category")
            .attr("name", *name)
            .attr("value", *value)
            .build()
    });
    NodeBuilder::new("privacy").children(categories).build()
}

/// A companion logs itself out: it leaves the account.
fn remove_companion(asker: &Asker<'_>, iq: &Node) -> Answer {
    let named = iq
        .get_optional_child("remove-companion-device")
        .and_then(|r| r.attrs.get("jid"))
        .and_then(|v| v.to_jid());
    let own = named
        .and_then(|jid| UserRef::from_jid(&jid))
        .is_some_and(|user| {
            user.device() == asker.device
                && asker
                    .shared
                    .directory
                    .resolve(user)
                    .is_some_and(|a| a.phone == asker.account.phone)
        });
    if !own {
        return Err(IqError::NotAcceptable("a companion may remove only itself"));
    }
    pairing::remove_devices(asker.shared, asker.account, |d| d == asker.device);
    tracing::info!("companion logged itself out");
    Ok(vec![])
}
