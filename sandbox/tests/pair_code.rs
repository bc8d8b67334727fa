//! Pair-code linking with the real client: it shows a code for a number,
//! that number's phone enters it (`POST /phones/{phone}/link-code`), and
//! the companion joins the account as with a QR scan. A wrong code links
//! nothing.

use crate::support::{Companion, Sandbox};
use serde_json::json;
use whatsapp_rust::pair_code::PairCodeOptions;

async fn show_code(companion: &mut Companion, phone: &str) -> String {
    // The client is connected for registration once it shows a QR.
    companion.next_qr().await;
    let options = PairCodeOptions {
        phone_number: phone.to_owned(),
        ..Default::default()
    };
    let code = companion.client().pair_with_code(options).await;
    code.expect("the client gets a pair code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_enters_the_companions_code_and_it_connects() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000041").await;
    let mut companion = Companion::fresh(&sandbox.ws_url()).await;
    let code = show_code(&mut companion, "62811000041").await;
    // Typed as people do: with a dash, in lower case.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let (status, linked) = sandbox
        .post("/phones/62811000041/link-code", json!({ "code": typed }))
        .await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["device"], 1);
    companion.connected().await;
    sandbox
        .phone_until("62811000041", "device 1 online", |v| v.online == [1])
        .await;
    companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_unshown_code_links_nothing() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000042").await;
    let (status, body) = sandbox
        .post(
            "/phones/62811000042/link-code",
            json!({ "code": "ABCD-EFGH" }),
        )
        .await;
    assert_eq!(status, 409, "no companion shows a code: {body}");
    let (status, body) = sandbox
        .post("/phones/62811000042/link-code", json!({ "code": "0000" }))
        .await;
    assert_eq!(status, 422, "{body}");

    let mut companion = Companion::fresh(&sandbox.ws_url()).await;
    let code = show_code(&mut companion, "62811000042").await;
    let wrong = if code == "ABCDEFGH" {
        "HGFEDCBA"
    } else {
        "ABCDEFGH"
    };
    let (status, body) = sandbox
        .post("/phones/62811000042/link-code", json!({ "code": wrong }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(sandbox.phone("62811000042").await.devices, vec![0]);
    companion.stop().await;
}
