//! The crate's example, run as a test: a plain `whatsapp-rust` client (no
//! WAGO) pairs with an in-process sandbox, sends a text to a phone, sees it
//! delivered and read, and gets the reply.

#[allow(dead_code)] // its `main` is for `cargo run --example echo`
#[path = "../examples/echo.rs"]
mod echo;

#[tokio::test]
async fn a_plain_client_pairs_sends_and_gets_receipts_and_a_reply() {
    let echo = echo::run().await.expect("the conversation runs");
    assert_eq!(echo.device, 1, "the first companion of the account");
    assert_eq!(echo.received, "ping");
    assert_eq!(echo.reply, "pong");
}
