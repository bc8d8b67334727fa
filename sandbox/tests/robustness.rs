//! Misbehaving peers end their own connection and nothing else: garbage,
//! a client that stops mid-handshake, an unknown stanza. Unknown queries
//! get an error answer; malformed messages a nack or a retry receipt, and
//! the connection stays. The sandbox keeps serving real clients throughout.

use std::time::{Duration, Instant};

use buffa::Message as _;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::consts::WA_CONN_HEADER;
use waproto::whatsapp as wa;
use whatsapp_rust::{Jid, Server};

use crate::support::{Sandbox, config, pair};

/// Waits until the sandbox has no connection task alive.
async fn all_closed(sandbox: &Sandbox) {
    let start = Instant::now();
    while sandbox.inner.stats().open_connections > 0 {
        let stats = sandbox.inner.stats();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still open: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when the server ends the WebSocket within `limit`.
async fn server_closes<S>(ws: &mut S, limit: Duration) -> bool
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .is_ok()
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_only_its_own_connection() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000401").await;

    // Not HTTP at all.
    let mut tcp = tokio::net::TcpStream::connect(sandbox.inner.addr())
        .await
        .expect("tcp");
    tcp.write_all(b"\x16\x03\x01garbage\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;

    // WebSocket, wrong opening bytes.
    let (mut ws, _) = tokio_tungstenite::connect_async(sandbox.ws_url())
        .await
        .expect("ws");
    ws.send(Message::Binary(b"HELLO WORLD".to_vec().into()))
        .await
        .expect("send");
    assert!(
        server_closes(&mut ws, Duration::from_secs(5)).await,
        "bad header kept open"
    );

    // WebSocket, right header, a frame that is no handshake message.
    let (mut ws, _) = tokio_tungstenite::connect_async(sandbox.ws_url())
        .await
        .expect("ws");
    let mut bytes = WA_CONN_HEADER.to_vec();
    bytes.extend(framed(&[0xff; 40]));
    ws.send(Message::Binary(bytes.into())).await.expect("send");
    assert!(
        server_closes(&mut ws, Duration::from_secs(5)).await,
        "garbage frame kept open"
    );

    // Text on a binary protocol.
    let (mut ws, _) = tokio_tungstenite::connect_async(sandbox.ws_url())
        .await
        .expect("ws");
    ws.send(Message::Text("{}".into())).await.expect("send");
    assert!(
        server_closes(&mut ws, Duration::from_secs(5)).await,
        "text kept open"
    );

    all_closed(&sandbox).await;
    let (companion, _) = pair(&sandbox, "62811000401").await;
    assert_eq!(sandbox.phone("62811000401").await.online, vec![1]);
    companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_handshake_is_dropped() {
    let mut config = config();
    config.handshake_timeout = Duration::from_secs(1);
    let sandbox = Sandbox::start_with(config).await;
    sandbox.create_phone("62811000402").await;

    // A proper client hello, then silence after the server's answer.
    let (mut ws, _) = tokio_tungstenite::connect_async(sandbox.ws_url())
        .await
        .expect("ws");
    let ephemeral = wacore_libsignal::protocol::KeyPair::generate(&mut rand::rng());
    let hello = wa::HandshakeMessage {
        client_hello: buffa::MessageField::some(wa::handshake_message::ClientHello {
            ephemeral: Some(ephemeral.public_key.public_key_bytes().to_vec()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut bytes = WA_CONN_HEADER.to_vec();
    bytes.extend(framed(&hello.encode_to_vec()));
    ws.send(Message::Binary(bytes.into())).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(answer, Ok(Some(Ok(Message::Binary(_))))),
        "server hello expected"
    );
    assert_eq!(sandbox.inner.stats().open_connections, 1);

    // Meanwhile a real client pairs as usual.
    let (companion, _) = pair(&sandbox, "62811000402").await;
    assert!(
        server_closes(&mut ws, Duration::from_secs(5)).await,
        "stalled handshake kept"
    );
    let stats = sandbox.inner.stats();
    assert_eq!(stats.open_connections, 1, "only the real client: {stats:?}");
    companion.stop().await;
    all_closed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queries_get_501_and_unknown_stanzas_end_the_connection() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000403").await;
    let (mut companion, _) = pair(&sandbox, "62811000403").await;
    let client = companion.client();
    // A keepalive is a known query: answered, not refused.
    client
        .execute(wacore::iq::keepalive::KeepaliveSpec::new())
        .await
        .expect("keepalive answered");

    let query = wacore::request::InfoQuery::get(
        "w:sandbox:nonesuch",
        Jid::new("", Server::Pn),
        Some(wacore_binary::NodeContent::Nodes(vec![
            NodeBuilder::new("mystery").build(),
        ])),
    );
    match client.send_iq(query).await {
        Err(whatsapp_rust::IqError::ServerError { code, text, .. }) => {
            assert_eq!((code, text.as_str()), (501, "feature-not-implemented"));
        }
        other => panic!(
            "expected a 501 error iq, got {:?}",
            other.map(|_| "a result")
        ),
    }
    assert_eq!(sandbox.inner.stats().unimplemented_iqs, 1);

    // A stanza the server does not know: this connection ends, the client
    // reconnects and logs in again; the sandbox carries on.
    let logins = sandbox.inner.stats().logins;
    client
        .send_node(NodeBuilder::new("bogus").build())
        .await
        .expect("sent");
    companion.logged_in().await;
    assert_eq!(sandbox.inner.stats().logins, logins + 1);
    sandbox
        .phone_until("62811000403", "back online", |v| v.online == [1])
        .await;
    companion.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_refused_and_the_connection_stays() {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone("62811000404").await;
    sandbox.create_phone("62811000405").await;
    let (mut companion, _) = pair(&sandbox, "62811000404").await;
    let client = companion.client();
    let logins = sandbox.inner.stats().logins;
    let to = Jid::pn("62811000405");

    // No id; then a copy for the phone that is not a Signal message.
    let no_id = NodeBuilder::new("message")
        .attr("to", to.clone())
        .children([NodeBuilder::new("participants").build()])
        .build();
    client.send_node(no_id).await.expect("sent");
    let enc = NodeBuilder::new("enc")
        .attr("v", "2")
        .attr("type", "pkmsg")
        .bytes(vec![1, 2, 3])
        .build();
    let garbage = NodeBuilder::new("message")
        .attr("to", to.clone())
        .attr("id", "BAD00001")
        .attr("type", "text")
        .children([NodeBuilder::new("participants")
            .children([NodeBuilder::new("to")
                .attr("jid", to.clone())
                .children([enc])
                .build()])
            .build()])
        .build();
    client.send_node(garbage).await.expect("sent");
    let error = companion
        .wait_for("the ack", crate::support::STEP, |e| match e {
            wacore::types::events::Event::ServerAck(ack) if ack.id == "BAD00001" => {
                Some(ack.error.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(error, None, "accepted; the phone asks for it again");
    assert_eq!(sandbox.inner.stats().decrypt_failures, 1);

    // The same connection still carries real messages.
    companion.send_text("62811000405", "masih hidup").await;
    let start = Instant::now();
    while sandbox.inner.inbox("62811000405").await.unwrap().is_empty() {
        assert!(start.elapsed() < crate::support::STEP, "no text arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.inner.stats().logins, logins);
    companion.stop().await;
}
