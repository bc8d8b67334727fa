//! `GET /messages`: the persisted inbox, filtered and paged, per tenant.

mod common;

use common::{TestApp, TestDb};
use serde_json::Value;

db_tests!(inbox_pages_filters_and_isolates_tenants);

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
