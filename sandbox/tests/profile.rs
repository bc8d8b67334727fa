//! Profiles: an account's about text reaches other connected devices, and
//! its profile picture can be set, read by anyone, and removed, each
//! change announced as a notification.

use std::time::Duration;

use crate::support::{Sandbox, pair};
use wacore::types::events::Event;
use whatsapp_rust::Jid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_about_text_reaches_other_devices() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000051").await;
    sandbox.create_phone("62811000052").await;
    let (a, _) = pair(&sandbox, "62811000051").await;
    let (mut b, _) = pair(&sandbox, "62811000052").await;
    a.client()
        .profile()
        .set_status_text("at lunch")
        .await
        .expect("status");
    b.wait_for("A's about text", Duration::from_secs(10), |e| match e {
        Event::UserAboutUpdate(u) if u.jid.user == "62811000051" => Some(u.status.clone()),
        _ => None,
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_picture_is_set_read_and_removed() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000053").await;
    sandbox.create_phone("62811000054").await;
    let (mut a, _) = pair(&sandbox, "62811000053").await;
    let (b, _) = pair(&sandbox, "62811000054").await;
    let jid_a = Jid::pn("62811000053");
    let none = b
        .client()
        .contacts()
        .get_profile_picture(&jid_a, true)
        .await;
    assert!(none.expect("an answer").is_none());

    let set = a
        .client()
        .profile()
        .set_profile_picture(vec![0xFF, 0xD8])
        .await;
    let set = set.expect("picture set");
    let update = a
        .wait_for("PictureUpdate", Duration::from_secs(10), |e| match e {
            Event::PictureUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .await;
    assert_eq!(update.picture_id.as_deref(), Some(set.id.as_str()));
    let seen = b
        .client()
        .contacts()
        .get_profile_picture(&jid_a, false)
        .await;
    let seen = seen.expect("an answer").expect("a picture");
    assert_eq!(seen.id, set.id);
    assert!(!seen.url.is_empty());

    a.client()
        .profile()
        .remove_profile_picture()
        .await
        .expect("removed");
    let gone = b
        .client()
        .contacts()
        .get_profile_picture(&jid_a, true)
        .await;
    assert!(gone.expect("an answer").is_none());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_senders_new_push_name() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000055").await;
    sandbox.create_phone("62811000056").await;
    let (a, _) = pair(&sandbox, "62811000055").await;
    let (mut b, _) = pair(&sandbox, "62811000056").await;
    a.client()
        .profile()
        .set_push_name("Ana")
        .await
        .expect("renamed");
    a.send_text("62811000056", "from ana").await;
    let name = b
        .wait_for("the text", Duration::from_secs(10), |e| {
            e.messages()
                .find(|m| m.message.conversation.as_deref() == Some("from ana"))
                .map(|m| m.info.push_name.clone())
        })
        .await;
    assert_eq!(name, "Ana");
    a.stop().await;
    b.stop().await;
}
