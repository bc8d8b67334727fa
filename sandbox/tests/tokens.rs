//! Restricted accounts and privacy tokens: an account whose push name
//! asks for it (`restricted:`) refuses a stranger's first message with a
//! 463 nack; once it issues the stranger a trusted-contact token, the
//! stranger's client holds it, attaches it, and the message goes through.
//! A sender whose phone delivered it an NCT salt (by app state or by
//! history sync) opens such an account with a contact-secret token
//! instead; and a restricted account's presence and picture are shown only
//! to holders of its token.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{Companion, Sandbox};
use wacore::types::events::Event;
use whatsapp_rust::NodeFilter;

/// Waits until `check` holds, polling; panics with `what` after 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `holder` keeps a trusted-contact token `issuer` gave it.
async fn holds_token_of(holder: &Companion, issuer: &Companion) {
    let key = issuer.client().lid().expect("a LID").user.to_string();
    eventually("no token stored", || async {
        holder
            .client()
            .tc_token()
            .get(&key)
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
}

fn nct_salt(companion: &Companion) -> Option<Vec<u8>> {
    companion
        .client()
        .persistence_manager()
        .get_device_snapshot()
        .nct_salt
        .clone()
}

/// Sends `text` to `to` by its LID with an id of our own, and returns the
/// stanza the client wrote and the server's ack of it.
async fn send_by_lid(
    from: &Companion,
    to: &whatsapp_rust::Jid,
    text: &str,
) -> (Arc<wacore_binary::Node>, Arc<wacore_binary::OwnedNodeRef>) {
    let id = format!(
        "3EB0{}",
        uuid::Uuid::new_v4().simple().to_string()[..18].to_uppercase()
    );
    let client = from.client();
    let written = client.wait_for_sent_node(NodeFilter::tag("message").attr("id", id.clone()));
    let acked = client.wait_for_node(NodeFilter::tag("ack").attr("id", id.clone()));
    let message = waproto::whatsapp::Message {
        conversation: Some(text.into()),
        ..Default::default()
    };
    client
        .send_message_with_options(
            to.to_non_ad(),
            message,
            whatsapp_rust::SendOptions::default().with_message_id(id),
        )
        .await
        .expect("the send");
    let written = tokio::time::timeout(Duration::from_secs(10), written)
        .await
        .expect("the stanza in time")
        .expect("the stanza");
    let acked = tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("the ack in time")
        .expect("the ack");
    (written, acked)
}

fn has_child(node: &wacore_binary::Node, tag: &str) -> bool {
    node.get_optional_child(tag).is_some()
}

fn error_of(ack: &wacore_binary::OwnedNodeRef) -> Option<String> {
    ack.get().get_attr("error").map(|v| v.as_str().into_owned())
}

async fn scan(sandbox: &Sandbox, push_name: &str) -> (Companion, String) {
    let mut companion = Companion::named(&sandbox.ws_url(), push_name).await;
    let qr = companion.next_qr().await;
    let (status, linked) = sandbox.scan_qr(&qr).await;
    assert_eq!(status, 200, "scan-qr: {linked}");
    companion.connected().await;
    (
        companion,
        linked["phone"].as_str().expect("a phone").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_account_takes_messages_only_with_its_token() {
    let sandbox = Sandbox::start().await;
    let (mut rita, r_phone) = scan(&sandbox, "restricted:rita").await;
    let (mut sam, s_phone) = scan(&sandbox, "sam").await;
    let (stranger, _) = scan(&sandbox, "stan").await;

    // A stranger's first message is refused.
    let nack = stranger
        .client()
        .wait_for_node(NodeFilter::tag("ack").attr("error", "463"));
    stranger.send_text(&r_phone, "hello?").await;
    tokio::time::timeout(Duration::from_secs(10), nack)
        .await
        .expect("a 463 nack in time")
        .expect("the nack");

    // Rita writes to Sam: her client issues him a token, his keeps it...
    rita.send_text(&s_phone, "hi sam").await;
    assert_eq!(sam.texts(1).await[0].text, "hi sam");
    holds_token_of(&sam, &rita).await;
    // ...and attaches it to his reply, which goes through.
    sam.send_text(&r_phone, "hi rita").await;
    assert_eq!(rita.texts(1).await[0].text, "hi rita");
    for companion in [rita, sam, stranger] {
        companion.stop().await;
    }
}

/// The salt reaches the sender by the path its account's phone delivers
/// it; with it the sender's client attaches a `<cstoken>` to a first
/// message, which opens an account that takes contact-secret tokens.
/// Without a salt, the same first message is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nct_salt_from_the_phone_opens_a_restricted_account() {
    let sandbox = Sandbox::start().await;
    let (mut cora, _) = scan(
        &sandbox,
        "scenario:restricted,tc_enabled=0,cs_enabled=1:cora",
    )
    .await;
    let cora_lid = cora.client().lid().expect("a LID");
    for (sender, path) in [
        (
            "scenario:nct_send_ab=1,nct_syncd_ab=1,nct_syncd_delivery=1:by_app_state",
            "app state",
        ),
        (
            "scenario:nct_send_ab=1,nct_history_ab=1,nct_history_delivery=1:by_history",
            "history sync",
        ),
    ] {
        let (ned, _) = scan(&sandbox, sender).await;
        eventually(&format!("no NCT salt by {path}"), || async {
            nct_salt(&ned).is_some()
        })
        .await;
        let text = format!("first contact, salt by {path}");
        let (written, ack) = send_by_lid(&ned, &cora_lid, &text).await;
        assert!(has_child(&written, "cstoken") && !has_child(&written, "tctoken"));
        assert_eq!(error_of(&ack), None, "the server took it");
        assert_eq!(cora.texts(1).await[0].text, text);
        ned.stop().await;
    }

    // A sender whose phone delivers no salt sends no token, and is refused.
    let (nell, _) = scan(&sandbox, "scenario:nct_send_ab=1:nell").await;
    assert_eq!(nct_salt(&nell), None);
    let (written, ack) = send_by_lid(&nell, &cora_lid, "no salt").await;
    assert!(!has_child(&written, "cstoken"));
    assert_eq!(error_of(&ack).as_deref(), Some("463"));

    // A token computed from a salt the server did not issue is refused too.
    nell.client()
        .persistence_manager()
        .process_command(whatsapp_rust::store::commands::DeviceCommand::SetNctSalt(
            Some(vec![9; 32]),
        ))
        .await;
    let (written, ack) = send_by_lid(&nell, &cora_lid, "a made-up salt").await;
    assert!(has_child(&written, "cstoken"));
    assert_eq!(error_of(&ack).as_deref(), Some("463"));
    for companion in [cora, nell] {
        companion.stop().await;
    }
}

/// A restricted account shows its picture and its presence only to a
/// contact holding a token it issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_account_shows_presence_and_picture_only_with_its_token() {
    let sandbox = Sandbox::start().await;
    let (rhea, _) = scan(&sandbox, "restricted:rhea").await;
    let (mut sid, s_phone) = scan(&sandbox, "sid").await;
    rhea.client()
        .profile()
        .set_profile_picture(vec![0xFF, 0xD8, 0xFF, 0xE0])
        .await
        .expect("a picture");
    let rhea_jid = rhea.client().pn().expect("a JID").to_non_ad();

    let hidden = sid
        .client()
        .contacts()
        .get_profile_picture(&rhea_jid, false)
        .await
        .expect("an answer");
    assert!(hidden.is_none(), "no token: no picture");
    sid.client()
        .presence()
        .subscribe(&rhea_jid)
        .await
        .expect("subscribe");
    let from_rhea = |e: &Event| match e {
        Event::Presence(p) if p.from.user == rhea_jid.user => Some(()),
        _ => None,
    };
    let silent = tokio::time::timeout(
        Duration::from_secs(2),
        sid.wait_for("presence", Duration::from_secs(10), from_rhea),
    );
    assert!(silent.await.is_err(), "no token: no presence");

    // Rhea writes first, which issues Sid a token.
    rhea.send_text(&s_phone, "hello sid").await;
    assert_eq!(sid.texts(1).await[0].text, "hello sid");
    holds_token_of(&sid, &rhea).await;

    let shown = sid
        .client()
        .contacts()
        .get_profile_picture(&rhea_jid, false)
        .await
        .expect("an answer");
    assert!(shown.is_some(), "with the token, the picture");
    sid.client()
        .presence()
        .subscribe(&rhea_jid)
        .await
        .expect("subscribe");
    sid.wait_for(
        "presence with the token",
        Duration::from_secs(10),
        from_rhea,
    )
    .await;
    for companion in [rhea, sid] {
        companion.stop().await;
    }
}
