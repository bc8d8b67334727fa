//! `GET /messages`: the persisted inbox, filtered and paged, per tenant;
//! and how outbound statuses move.

mod common;

use common::{TestApp, TestDb};
use serde_json::Value;

db_tests!(
    inbox_pages_filters_and_isolates_tenants,
    outbound_statuses_only_move_forward_and_report_every_step,
);

async fn insert_inbound(app: &TestApp, tenant: &str, n: i64, chat: &str, text: &str) {
    sqlx::query(
        "INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind,
                               text, status, timestamp, created_at, updated_at)
         VALUES ($1, 'in', $2, $3, $3, 'conversation', $4, 'received', $5, $5, $5)",
    )
    .bind(tenant)
    .bind(format!("3EB0{n:04}"))
    .bind(chat)
    .bind(text)
    .bind(1_756_718_431_000 + n * 1000)
    .execute(app.store.pool())
    .await
    .unwrap();
}

async fn inbox_pages_filters_and_isolates_tenants(db: TestDb) {
    let app = TestApp::spawn(&db, &[]).await;
    let (a, key_a) = app.create_tenant("a").await;
    let (b, key_b) = app.create_tenant("b").await;
    let alice = "62811000001@s.whatsapp.net";
    let bob = "62811000002@s.whatsapp.net";
    for (n, chat) in [(1, alice), (2, bob), (3, alice), (4, alice)] {
        insert_inbound(&app, &a, n, chat, &format!("hello {n}")).await;
    }
    insert_inbound(&app, &b, 5, alice, "for b only").await;

    let (status, page) = app.tenant_get(&key_a, "/messages?limit=2").await;
    assert_eq!(status, 200);
    let texts = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&page), ["hello 1", "hello 2"]);
    let first = &page["messages"][0];
    assert_eq!(first["message_id"], "3EB00001");
    assert_eq!(first["chat_id"], alice);
    assert_eq!(first["kind"], "conversation");
    assert_eq!(first["timestamp"], "2025-09-01T09:20:32Z");
    let next = page["next_after"].as_i64().unwrap();
    assert_eq!(next, page["messages"][1]["id"].as_i64().unwrap());

    let (_, page) = app
        .tenant_get(&key_a, &format!("/messages?limit=2&after={next}"))
        .await;
    assert_eq!(texts(&page), ["hello 3", "hello 4"]);
    let (_, page) = app
        .tenant_get(&key_a, "/messages?chat=%2B62811000001")
        .await;
    assert_eq!(texts(&page), ["hello 1", "hello 3", "hello 4"]);
    let (_, page) = app
        .tenant_get(&key_a, &format!("/messages?chat={bob}"))
        .await;
    assert_eq!(texts(&page), ["hello 2"]);

    let (_, page) = app.tenant_get(&key_b, "/messages").await;
    assert_eq!(texts(&page), ["for b only"]);

    let (status, err) = app.tenant_get(&key_a, "/messages?chat=not-a-number").await;
    assert_eq!(status, 422);
    assert!(err["message"].as_str().unwrap().starts_with("chat"));
    app.stop().await;
}

/// A delivery receipt can overtake the send's own result: the row ends
/// `delivered`, not `sent`, and the webhook still sees every step once and
/// in order. Concurrent moves of one row never lose one another.
async fn outbound_statuses_only_move_forward_and_report_every_step(db: TestDb) {
    use wago::store::messages::{Accepted, MessageStatus, NewOutbound};
    use wago::store::webhooks::SecretUpdate;
    use wago::tenants::TenantId;

    let app = TestApp::spawn(&db, &[]).await;
    let (id, _) = app.create_tenant("a").await;
    let tenant = TenantId::from_raw(id.as_str());
    let events = ["message.status".to_owned()];
    app.store
        .put_webhook(
            &tenant,
            "https://example.com/h",
            SecretUpdate::Remove,
            &events,
            true,
        )
        .await
        .unwrap();
    let send = |message_id: &'static str| NewOutbound {
        message_id,
        chat_id: "62812000001@s.whatsapp.net",
        kind: "conversation",
        text: "hi",
        idempotency_key: None,
    };
    let store = &app.store;
    assert!(matches!(
        store
            .accept_outbound(&tenant, "", &send("3EB0A"))
            .await
            .unwrap(),
        Accepted::New(_)
    ));

    // The receipt first, then the send's result, then a late duplicate.
    assert!(
        store
            .advance_outbound(&tenant, "3EB0A", MessageStatus::Delivered, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_outbound(&tenant, "3EB0A", MessageStatus::Sent, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_outbound(&tenant, "3EB0A", MessageStatus::Delivered, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_outbound(&tenant, "3EB0A", MessageStatus::Failed, Some("late"))
            .await
            .unwrap()
    );
    assert!(
        store
            .advance_outbound(&tenant, "3EB0A", MessageStatus::Read, None)
            .await
            .unwrap()
    );
    let row = store.get_message(&tenant, "3EB0A").await.unwrap().unwrap();
    assert_eq!(row.status, MessageStatus::Read);
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM webhook_outbox ORDER BY sequence")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let statuses: Vec<String> = payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap()["status"].to_string())
        .collect();
    assert_eq!(statuses, ["\"sent\"", "\"delivered\"", "\"read\""]);

    // Many concurrent moves of one row: it ends at the furthest.
    assert!(matches!(
        store
            .accept_outbound(&tenant, "", &send("3EB0B"))
            .await
            .unwrap(),
        Accepted::New(_)
    ));
    let mut moves = Vec::new();
    for status in [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Sent,
        MessageStatus::Delivered,
    ] {
        let store = store.clone();
        let tenant = tenant.clone();
        moves.push(tokio::spawn(async move {
            store
                .advance_outbound(&tenant, "3EB0B", status, None)
                .await
                .unwrap()
        }));
    }
    for m in moves {
        m.await.unwrap();
    }
    let row = store.get_message(&tenant, "3EB0B").await.unwrap().unwrap();
    assert_eq!(row.status, MessageStatus::Read);
}
