//! Pairing a tenant by pair code instead of QR: `POST /session/pair-code`
//! gives the code the session shows for a number, that number's phone
//! enters it in the sandbox, and the session connects as that number. A
//! paired session has no code to give.
#![cfg(feature = "sandbox")]

mod common;
#[path = "../sandbox/tests/support/mod.rs"]
mod support_sandbox;
mod support_wago;

use serde_json::json;

use common::TestDb;
use support_sandbox::Sandbox;
use support_wago::{Tenant, spawn};

const PHONE: &str = "62811000150";

async fn a_tenant_pairs_by_code(db: TestDb) {
    let sandbox = Sandbox::start().await;
    sandbox.create_phone(PHONE).await;
    let app = spawn(&db, &sandbox, &[]).await;
    let acme = Tenant::create(&app, "acme").await;

    let (status, body) = acme
        .post(&app, "/session/pair-code", json!({ "phone": PHONE }))
        .await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().expect("a code").to_owned();
    let (status, linked) = sandbox
        .post(
            &format!("/phones/{PHONE}/link-code"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 200, "link-code: {linked}");

    let session = acme.wait_state(&app, "connected").await;
    let jid = session["jid"].as_str().expect("a jid once paired");
    assert!(jid.starts_with(PHONE), "{jid}");
    assert_eq!(sandbox.phone(PHONE).await.devices, vec![0, 1]);

    let (status, body) = acme
        .post(&app, "/session/pair-code", json!({ "phone": PHONE }))
        .await;
    assert_eq!(status, 409, "{body}");
}

db_tests!(a_tenant_pairs_by_code);
