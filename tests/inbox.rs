//! `GET /messages`: the persisted inbox, filtered and paged, per tenant;
//! how outbound statuses move, and how an idempotency key holds under a
//! race.

mod common;

use common::{TestApp, TestDb};
use serde_json::Value;

db_tests!(
    inbox_pages_filters_and_isolates_tenants,
    outbound_statuses_only_move_forward_and_report_every_step,
    status_changes_of_many_sessions_commit_together_as_if_one_by_one,
    a_key_raced_by_two_transactions_writes_one_send,
    sends_accepted_at_once_each_get_their_row_and_a_bad_one_fails_alone,
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

/// Gives the tenant a (trusted) webhook for `message.status`.
async fn subscribe_to_statuses(app: &TestApp, tenant: &wago::tenants::TenantId) {
    let events = ["message.status".to_owned()];
    app.store
        .put_webhook(
            tenant,
            "https://example.com/h",
            wago::store::webhooks::SecretUpdate::Remove,
            &events,
            true,
        )
        .await
        .unwrap();
}

/// A delivery receipt can overtake the send's own result: the row ends
/// `delivered`, not `sent`, and the webhook still sees every step once and
/// in order. Concurrent moves of one row never lose one another.
async fn outbound_statuses_only_move_forward_and_report_every_step(db: TestDb) {
    use wago::store::messages::{Accepted, NewOutbound};
    use wago::tenants::TenantId;
    use wago::types::MessageStatus;

    let app = TestApp::spawn(&db, &[]).await;
    let (id, _) = app.create_tenant("a").await;
    let tenant = TenantId::from_raw(id.as_str());
    subscribe_to_statuses(&app, &tenant).await;
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

/// Acks and receipts of many sessions at once share transactions (the
/// store's status writer): each change still answers as if it had been
/// applied alone, in order, and each tenant's webhook sees every step of
/// its own messages once, in order, and nothing of another tenant's.
async fn status_changes_of_many_sessions_commit_together_as_if_one_by_one(db: TestDb) {
    use MessageStatus::{Delivered, Failed, Read, Sent};
    use wago::store::messages::{Accepted, Advanced, NewOutbound, StatusChange};
    use wago::tenants::TenantId;
    use wago::types::MessageStatus;

    let app = TestApp::spawn(&db, &[]).await;
    let store = &app.store;
    let mut tenants = Vec::new();
    for n in 0..12 {
        let (id, _) = app.create_tenant(&format!("t{n}")).await;
        let tenant = TenantId::from_raw(id.as_str());
        // Every other tenant has a webhook.
        if n % 2 == 0 {
            subscribe_to_statuses(&app, &tenant).await;
        }
        for m in 0..5 {
            let message_id = format!("3EB0{n:02}{m:02}");
            let send = NewOutbound {
                message_id: &message_id,
                chat_id: "62812000001@s.whatsapp.net",
                kind: "conversation",
                text: "hi",
                idempotency_key: None,
            };
            let accepted = store.accept_outbound(&tenant, "", &send).await.unwrap();
            assert!(matches!(accepted, Accepted::New(_)));
        }
        tenants.push(tenant);
    }
    let change = |tenant: &TenantId, m: usize, status, error: Option<&str>| StatusChange {
        tenant: tenant.clone(),
        message_id: format!("3EB0{}{m:02}", &tenant_number(&tenants, tenant)),
        status,
        error: error.map(str::to_owned),
    };
    fn tenant_number(tenants: &[TenantId], tenant: &TenantId) -> String {
        format!("{:02}", tenants.iter().position(|t| t == tenant).unwrap())
    }

    // One call: several steps of one message, a receipt overtaking its
    // ack, a refusal, a row that does not exist.
    let (a, b) = (&tenants[0], &tenants[1]);
    let answers = store
        .advance_outbound_many(vec![
            change(a, 0, Sent, None),
            change(b, 0, Delivered, None),
            change(a, 0, Read, None),
            change(b, 0, Sent, None),
            change(a, 1, Failed, Some("refused")),
            change(a, 1, Sent, None),
            StatusChange {
                message_id: "3EB0NONE".into(),
                ..change(a, 2, Sent, None)
            },
        ])
        .await
        .unwrap();
    let moved = |status| Advanced {
        moved: true,
        status: Some(status),
    };
    let stayed = |status| Advanced {
        moved: false,
        status: Some(status),
    };
    assert_eq!(
        answers,
        [
            moved(Sent),
            moved(Delivered),
            moved(Read),
            stayed(Delivered),
            moved(Failed),
            stayed(Failed),
            Advanced {
                moved: false,
                status: None
            },
        ]
    );
    let a1 = store.get_message(a, "3EB00001").await.unwrap().unwrap();
    assert_eq!((a1.status, a1.error.as_deref()), (Failed, Some("refused")));

    // Many callers at once, every message through every step, in a
    // shuffled order of callers: every row ends `read`.
    let mut calls = Vec::new();
    for round in [Sent, Delivered, Read] {
        for (n, tenant) in tenants.iter().enumerate().skip(2) {
            for m in 0..5 {
                let store = store.clone();
                let one = change(tenant, m, round, None);
                // Some callers bring two messages at once, as a receipt does.
                let more =
                    (m % 2 == 0 && n % 3 == 0).then(|| change(tenant, (m + 1) % 5, round, None));
                calls.push(tokio::spawn(async move {
                    let mut changes = vec![one];
                    changes.extend(more);
                    store.advance_outbound_many(changes).await.unwrap()
                }));
            }
        }
        for call in calls.drain(..) {
            call.await.unwrap();
        }
    }
    for tenant in tenants.iter().skip(2) {
        for m in 0..5 {
            let id = format!("3EB0{}{m:02}", tenant_number(&tenants, tenant));
            let row = store.get_message(tenant, &id).await.unwrap().unwrap();
            assert_eq!(row.status, Read, "{id}");
        }
    }

    // Each subscribed tenant's events: its own messages' steps, each
    // once, in order; unsubscribed tenants got none.
    for (n, tenant) in tenants.iter().enumerate() {
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT payload FROM webhook_outbox WHERE tenant_id = $1 ORDER BY sequence",
        )
        .bind(tenant.as_str())
        .fetch_all(store.pool())
        .await
        .unwrap();
        if n % 2 == 1 {
            assert!(payloads.is_empty(), "tenant {n} has no webhook");
            continue;
        }
        let mut steps: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for p in &payloads {
            let body: Value = serde_json::from_str(p).unwrap();
            assert_eq!(body["tenant"], tenant.as_str());
            steps
                .entry(body["message_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(body["status"].as_str().unwrap().to_owned());
        }
        let expected: std::collections::BTreeMap<String, Vec<String>> = (0..5)
            .map(|m| format!("3EB0{n:02}{m:02}"))
            .filter_map(|id| {
                let want: &[&str] = match (n, id.as_str()) {
                    (0, "3EB00000") => &["sent", "delivered", "read"],
                    (0, "3EB00001") => &["failed"],
                    (0, _) => return None,
                    _ => &["sent", "delivered", "read"],
                };
                Some((id, want.iter().map(|s| s.to_string()).collect()))
            })
            .collect();
        assert_eq!(steps, expected, "tenant {n}");
    }
}

/// Two sends with one `Idempotency-Key`, their transactions interleaved on
/// purpose: the other request has written its row but not committed when
/// this one looks for the key. On Postgres this one finds nothing, inserts,
/// waits on the unique index until the other commits, then answers with
/// the other's send; on SQLite it waits for the one writer and then finds
/// the row. Either way: one row, and both answers name it.
async fn a_key_raced_by_two_transactions_writes_one_send(db: TestDb) {
    use wago::store::messages::{Accepted, NewOutbound};
    use wago::tenants::TenantId;

    let app = TestApp::spawn(&db, &[]).await;
    let (id, _) = app.create_tenant("a").await;
    let tenant = TenantId::from_raw(id.as_str());
    let store = app.store.clone();
    let now = wago::store::now_ms();

    // The other request, half-way: its row written, not committed.
    let mut other = store.begin_write().await.unwrap();
    sqlx::query(
        "INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind, text,
                               status, idempotency_key, timestamp, created_at, updated_at)
         VALUES ($1, 'out', '3EB0FIRST', '62812000001@s.whatsapp.net', '', 'conversation',
                 'hi', 'queued', 'order-7', $2, $2, $2)",
    )
    .bind(id.as_str())
    .bind(now)
    .execute(&mut *other)
    .await
    .unwrap();

    let this = tokio::spawn({
        let store = store.clone();
        let tenant = tenant.clone();
        async move {
            let send = NewOutbound {
                message_id: "3EB0SECOND",
                chat_id: "62812000001@s.whatsapp.net",
                kind: "conversation",
                text: "hi",
                idempotency_key: Some("order-7"),
            };
            store.accept_outbound(&tenant, "", &send).await
        }
    });
    if db.is_postgres() {
        // This one has looked for the key, found nothing and now waits on
        // the unique index: the race, not a request that came after.
        let pool = sqlx::PgPool::connect(&db.dsn()).await.unwrap();
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                !this.is_finished(),
                "it answered before the other committed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    other.commit().await.unwrap();

    match this.await.unwrap() {
        Ok(Accepted::Repeat(first)) => assert_eq!(first.message_id, "3EB0FIRST"),
        other => panic!("expected the other's send: {other:?}"),
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE idempotency_key = 'order-7'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

/// Sends accepted at the same moment share statements (`accepts.rs`):
/// each still gets its own row, numbered in the order it was accepted
/// within its tenant, and a send whose row cannot be written (its tenant
/// is gone) fails alone.
async fn sends_accepted_at_once_each_get_their_row_and_a_bad_one_fails_alone(db: TestDb) {
    use wago::store::messages::{Accepted, NewOutbound};
    use wago::tenants::TenantId;

    let app = TestApp::spawn(&db, &[]).await;
    let mut tenants = Vec::new();
    for n in 0..4 {
        let (id, _) = app.create_tenant(&format!("t{n}")).await;
        tenants.push(TenantId::from_raw(id.as_str()));
    }
    let gone = TenantId::from_raw("no-such-tenant");
    // Each tenant's sends in order, all tenants at once; the missing
    // tenant's send among them.
    let per_tenant = 25;
    let accepts = tenants.iter().chain([&gone]).map(|tenant| {
        let store = app.store.clone();
        let tenant = tenant.clone();
        async move {
            let mut rows = Vec::new();
            for m in 0..per_tenant {
                let message_id = format!("3EB0{}{m:03}", tenant.as_str());
                let send = NewOutbound {
                    message_id: &message_id,
                    chat_id: "62812000001@s.whatsapp.net",
                    kind: "conversation",
                    text: &message_id,
                    idempotency_key: None,
                };
                rows.push(store.accept_outbound(&tenant, "", &send).await);
            }
            (tenant, rows)
        }
    });
    let results = futures_util::future::join_all(accepts).await;
    for (tenant, rows) in results {
        if tenant == gone {
            assert!(rows.iter().all(|r| r.is_err()), "a send for no tenant");
            continue;
        }
        let mut last_id = 0;
        for (m, row) in rows.into_iter().enumerate() {
            let Ok(Accepted::New(row)) = row else {
                panic!("send {m} of {tenant}: {row:?}");
            };
            assert_eq!(row.message_id, format!("3EB0{}{m:03}", tenant.as_str()));
            assert_eq!(row.text.as_deref(), Some(row.message_id.as_str()));
            assert_eq!(row.status, wago::types::MessageStatus::Queued);
            assert!(row.id > last_id, "numbered in the order accepted");
            last_id = row.id;
        }
    }
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE direction = 'out'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(written, 4 * per_tenant as i64);
}
