//! The media host: a real client uploads encrypted media over HTTPS,
//! trusting the sandbox's own certificate and no other, sends it to another
//! account, whose companion downloads the same bytes and decrypts them and
//! whose phone keeps the file checked against its hash; the host refuses uploads without its auth or whose body is not
//! what their token names.

use crate::support::{Companion, MediaHttp, Sandbox, link_companion};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use wacore::download::{Downloadable, MediaType};
use waproto::whatsapp as wa;
use whatsapp_rust::UploadOptions;

const ALICE: &str = "62811000701";
const BOB: &str = "62812000701";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_goes_up_over_tls_and_down_to_another_companion() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ALICE).await;
    sandbox.create_phone(BOB).await;
    let certificate = sandbox.inner.media_certificate_pem().to_owned();
    let ws = sandbox.ws_url();
    let alice = Companion::with_media(&ws, MediaHttp::trusting(&certificate)).await;
    let (alice, _) = link_companion(&sandbox, ALICE, alice).await;
    let bob = Companion::with_media(&ws, MediaHttp::trusting(&certificate)).await;
    let (mut bob, _) = link_companion(&sandbox, BOB, bob).await;

    // Not a multiple of the cipher's block, and more than one TLS record.
    let original: Vec<u8> = (0..300_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = alice
        .client()
        .upload(
            original.clone(),
            MediaType::Document,
            UploadOptions::default(),
        )
        .await
        .expect("the upload succeeds");
    assert!(
        up.direct_path.starts_with("/v/sandbox/"),
        "{}",
        up.direct_path
    );
    let stats = sandbox.inner.stats();
    assert_eq!(stats.media_blobs, 1, "{stats:?}");
    // The host holds ciphertext and its MAC: the plaintext padded to the
    // block, and ten bytes more.
    assert_eq!(stats.media_bytes, original.len() / 16 * 16 + 16 + 10);

    let document = wa::message::DocumentMessage {
        url: Some(up.url.clone()),
        direct_path: Some(up.direct_path.clone()),
        media_key: Some(up.media_key.to_vec()),
        file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
        file_sha256: Some(up.file_sha256.to_vec()),
        file_length: Some(up.file_length),
        mimetype: Some("application/pdf".into()),
        file_name: Some("invoice.pdf".into()),
        ..Default::default()
    };
    send_document(&alice, BOB, document).await;

    let got = bob
        .wait_for("the document", crate::support::STEP, |event| {
            let wacore::types::events::Event::Messages(batch) = event else {
                return None;
            };
            batch
                .messages
                .iter()
                .find_map(|m| m.message.document_message.as_option().cloned())
        })
        .await;
    assert_eq!(got.file_name.as_deref(), Some("invoice.pdf"));
    let downloaded = bob
        .client()
        .download(&got as &dyn Downloadable)
        .await
        .expect("the download decrypts and verifies");
    assert_eq!(downloaded, original);

    // Bob's phone got its copy too: it fetched the blob, decrypted it and
    // checked it against the message's hash.
    let on_phone = sandbox
        .inner
        .wait_for_text(BOB, crate::support::STEP, |t| t.media.is_some())
        .await
        .expect("the phone keeps the document");
    let media = on_phone.media.expect("media");
    assert!(media.verified, "{media:?}");
    assert_eq!(media.kind, "document");
    assert_eq!(media.file_name.as_deref(), Some("invoice.pdf"));
    assert_eq!(media.mimetype.as_deref(), Some("application/pdf"));
    assert_eq!(media.size, original.len() as u64);
    assert_eq!(media.sha256, Some(hex::encode(Sha256::digest(&original))));

    // A message whose key does not open the blob is kept, marked so.
    let mut forged = got.clone();
    forged.media_key = Some(vec![7; 32]);
    forged.file_name = Some("forged.pdf".into());
    send_document(&alice, BOB, forged).await;
    let forged = sandbox
        .inner
        .wait_for_text(BOB, crate::support::STEP, |t| {
            t.media
                .as_ref()
                .is_some_and(|m| m.file_name.as_deref() == Some("forged.pdf"))
        })
        .await
        .expect("the phone keeps the forged document")
        .media
        .expect("media");
    assert!(!forged.verified);
    assert_eq!(
        forged.error.as_deref(),
        Some("the blob does not decrypt under the message's key (MAC or padding)")
    );

    alice.stop().await;
    bob.stop().await;
}

async fn send_document(from: &Companion, to: &str, document: wa::message::DocumentMessage) {
    let message = wa::Message {
        document_message: buffa::MessageField::some(document),
        ..Default::default()
    };
    from.client()
        .send_message(whatsapp_rust::Jid::pn(to), message)
        .await
        .expect("the message goes");
}

#[tokio::test]
async fn uploads_need_the_auth_and_a_body_that_hashes_to_their_token() {
    let sandbox = Sandbox::start().await;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(sandbox.inner.media_certificate_pem().as_bytes())
                .expect("PEM"),
        )
        .build()
        .expect("a client");
    let host = format!("https://{}", sandbox.inner.addr());
    let body = b"ciphertext and a mac".to_vec();
    let token = URL_SAFE_NO_PAD.encode(Sha256::digest(&body));
    let upload = |auth: &str, token: &str, body: Vec<u8>| {
        http.post(format!(
            "{host}/mms/document/{token}?auth={auth}&token={token}"
        ))
        .body(body)
        .send()
    };

    let refused = upload("not-the-auth", &token, body.clone())
        .await
        .expect("answers");
    assert_eq!(refused.status(), 401, "an upload without the host's auth");

    let auth = sandbox.inner.media_auth().to_owned();
    let mismatch = upload(&auth, &token, b"other bytes".to_vec())
        .await
        .expect("answers");
    assert_eq!(
        mismatch.status(),
        400,
        "a body that is not what the token names"
    );
    assert_eq!(
        sandbox.inner.stats().media_blobs,
        0,
        "nothing refused is kept"
    );
    let missing = http
        .get(format!("{host}/v/sandbox/document-{token}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);

    let stored = upload(&auth, &token, body.clone()).await.expect("answers");
    assert_eq!(stored.status(), 200);
    let answer: serde_json::Value = stored.json().await.expect("JSON");
    let direct_path = answer["direct_path"].as_str().expect("a direct path");
    assert_eq!(answer["url"], format!("{host}{direct_path}"));
    let back = http
        .get(format!("{host}{direct_path}?token={token}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(back.status(), 200);
    assert_eq!(back.bytes().await.expect("a body").to_vec(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sends_files_that_companions_download_unless_tampered() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(ALICE).await;
    sandbox.create_phone(BOB).await;
    let certificate = sandbox.inner.media_certificate_pem().to_owned();
    let bob = Companion::with_media(&sandbox.ws_url(), MediaHttp::trusting(&certificate)).await;
    let (mut bob, _) = link_companion(&sandbox, BOB, bob).await;

    // Through the control API: the file is the body, the rest the query.
    let original: Vec<u8> = (0..90_001u32).map(|i| (i * 13 % 251) as u8).collect();
    let sent = sandbox
        .http
        .post(sandbox.url(&format!(
            "/phones/{ALICE}/media?to={BOB}&kind=document&mimetype=application/pdf&file_name=a.pdf&caption=hi"
        )))
        .body(original.clone())
        .send()
        .await
        .expect("the control API answers");
    assert_eq!(sent.status(), 200);
    let sent: serde_json::Value = sent.json().await.expect("JSON");
    let id = sent["id"].as_str().expect("an id").to_owned();
    let got = message_to(&mut bob, &id, |m| m.document_message.as_option().cloned()).await;
    assert_eq!(got.file_name.as_deref(), Some("a.pdf"));
    assert_eq!(got.caption.as_deref(), Some("hi"));
    let downloaded = bob
        .client()
        .download(&got as &dyn Downloadable)
        .await
        .expect("the companion downloads and decrypts it");
    assert_eq!(downloaded, original);
    // Bob's phone got the same file.
    let on_phone = sandbox
        .inner
        .wait_for_text(BOB, crate::support::STEP, |t| t.id == id)
        .await
        .expect("the phone keeps it");
    let media = on_phone.media.expect("media");
    assert!(media.verified, "{media:?}");
    assert_eq!(media.sha256, Some(hex::encode(Sha256::digest(&original))));

    // A voice note, from the library API, with its blob tampered with.
    let note = wago_sandbox::NewMedia {
        to: BOB.into(),
        kind: wago_sandbox::MediaKind::Audio,
        mimetype: None,
        file_name: None,
        caption: None,
        voice: true,
        tamper: true,
    };
    let id = sandbox
        .inner
        .send_media(ALICE, note, vec![5; 4_000])
        .await
        .expect("sent");
    let got = message_to(&mut bob, &id, |m| m.audio_message.as_option().cloned()).await;
    assert_eq!(got.ptt, Some(true));
    assert!(
        bob.client()
            .download(&got as &dyn Downloadable)
            .await
            .is_err(),
        "a tampered blob does not decrypt"
    );
    let on_phone = sandbox
        .inner
        .wait_for_text(BOB, crate::support::STEP, |t| t.id == id)
        .await
        .expect("the phone keeps it");
    let media = on_phone.media.expect("media");
    assert!(!media.verified && media.voice, "{media:?}");
    bob.stop().await;
}

/// Waits until `companion` got message `id`, and picks from it.
async fn message_to<T>(
    companion: &mut Companion,
    id: &str,
    pick: impl Fn(&wa::Message) -> Option<T>,
) -> T {
    companion
        .wait_for(id, crate::support::STEP, |event| {
            let wacore::types::events::Event::Messages(batch) = event else {
                return None;
            };
            batch
                .messages
                .iter()
                .find(|m| m.info.id == id)
                .and_then(|m| pick(&m.message))
        })
        .await
}
