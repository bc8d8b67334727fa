//! Malformed input, driven from the served OpenAPI document: for every
//! operation, requests it must refuse (bodies that are not JSON, are not
//! UTF-8, come with the wrong content type or are too large; bodies of the
//! wrong shape: missing, mistyped, unknown and out-of-enum fields, and
//! random type-breaking changes from a seeded generator; bad query values;
//! path ids that name nothing). Each must get a 4xx the document lists for
//! that operation, with the error body, and change nothing: the same rows
//! and the same answers before and after. Both databases.

mod common;
mod support_openapi;

use common::{ADMIN_TOKEN, TestApp, TestDb};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use support_openapi::{Checker, fill, operations};

db_tests!(every_route_refuses_malformed_input_and_changes_nothing);

/// Valid bodies to start from: every operation that takes a JSON body has
/// one here (the test fails otherwise), and only broken copies are sent.
fn base_body(method: &str, path: &str) -> Option<Value> {
    Some(match (method, path) {
        ("post", "/admin/tenants") => {
            json!({ "name": "fuzz-new", "webhook_url": "https://example.org/h" })
        }
        ("post", "/session/pair-code") | ("post", "/admin/tenants/{id}/session/pair-code") => {
            json!({ "phone": "62811000001" })
        }
        ("post", "/send-text") => json!({ "to": "62812000002", "text": "halo", "queue": true }),
        ("post", "/send-otp") => {
            json!({ "to": "62812000002", "code": "1234", "template": "code %s", "queue": true })
        }
        // Media routes: their JSON form (a URL); the form is read part by part.
        (
            "post",
            "/send-image" | "/send-document" | "/send-audio" | "/send-video" | "/send-sticker",
        ) => json!({ "to": "62812000002", "url": "https://example.org/f", "queue": true }),
        ("put", "/webhook") | ("put", "/admin/tenants/{id}/webhook") => {
            json!({ "url": "https://example.org/hook", "secret": "s", "events": ["message.status"] })
        }
        ("post", "/webhook/deliveries/replay") => json!({ "status": "dead" }),
        ("post", "/admin/login") => json!({ "token": "not-the-token-0123" }),
        _ => return None,
    })
}

/// The JSON types a schema allows (following `$ref`, `oneOf`, enums).
fn allowed_types(doc: &Value, schema: &Value) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return allowed_types(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(any) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return any.iter().flat_map(|s| allowed_types(doc, s)).collect();
    }
    match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap().to_owned()).collect(),
        _ if schema["enum"].is_array() => vec!["string".into()],
        _ => vec![],
    }
}

/// Values of every JSON type but those `allowed` (integers also break
/// "string", and so on).
fn wrong_values(allowed: &[String]) -> Vec<Value> {
    let candidates = [
        ("string", json!("text")),
        ("integer", json!(42)),
        ("number", json!(1.5)),
        ("boolean", json!(true)),
        ("array", json!(["a"])),
        ("object", json!({ "a": 1 })),
        ("null", Value::Null),
    ];
    candidates
        .into_iter()
        .filter(|(t, _)| {
            !allowed
                .iter()
                .any(|a| a == t || (a == "number" && *t == "integer"))
        })
        .map(|(_, v)| v)
        .collect()
}

fn enum_of(doc: &Value, schema: &Value) -> Option<Vec<Value>> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return enum_of(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(any) = schema["oneOf"].as_array() {
        return any.iter().find_map(|s| enum_of(doc, s));
    }
    schema["enum"].as_array().cloned()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    }
}

/// One request that must be refused.
struct Bad {
    what: String,
    path: String,
    query: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

/// Everything the database holds that a request could change, and the
/// answers that show it (the key's `last_used_at` aside, which any
/// authenticated request may move).
async fn snapshot(app: &TestApp, key: &str, tenant: &str) -> Value {
    let mut counts = serde_json::Map::new();
    for table in [
        "tenants",
        "api_keys",
        "messages",
        "webhook_endpoints",
        "webhook_outbox",
        "webhook_attempts",
        "session_commands",
        "settings",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        counts.insert(table.into(), json!(n));
    }
    let (_, mut detail) = app
        .admin_json(Method::GET, &format!("/admin/tenants/{tenant}"))
        .await;
    for key in detail["keys"].as_array_mut().unwrap() {
        key.as_object_mut().unwrap().remove("last_used_at");
    }
    detail.as_object_mut().unwrap().remove("session");
    let (_, list) = app.admin_json(Method::GET, "/admin/tenants").await;
    let names: Vec<Value> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    let (_, webhook) = app.tenant_get(key, "/webhook").await;
    let (_, messages) = app.tenant_get(key, "/messages").await;
    let (_, deliveries) = app.tenant_get(key, "/webhook/deliveries").await;
    json!({
        "counts": counts,
        "tenant": detail,
        "names": names,
        "webhook": webhook,
        "messages": messages,
        "deliveries": deliveries,
    })
}

async fn every_route_refuses_malformed_input_and_changes_nothing(db: TestDb) {
    // No rate limit: this test sends hundreds of requests with one key.
    let app = TestApp::spawn(&db, &[("API_RATE_LIMIT", "0")]).await;
    let (tenant, key) = app.create_tenant("fuzz").await;
    let res = app
        .http
        .put(app.url("/webhook"))
        .header("X-API-Key", &key)
        .json(&json!({ "url": "https://example.org/kept", "secret": "kept-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .post(app.url("/send-text"))
        .header("X-API-Key", &key)
        .json(&json!({ "to": "62812000002", "text": "kept", "queue": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    let doc = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let checker = Checker::new(doc.clone());
    let error_schema = json!({ "$ref": "#/components/schemas/ErrorBody" });
    let before = snapshot(&app, &key, &tenant).await;
    let mut rng = StdRng::seed_from_u64(0x5741_474f);
    let limit = 65_536;
    let mut sent = 0;
    let mut covered = 0;

    for (path, method) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let valid_path = fill(&path, &tenant);
        let mut bad: Vec<Bad> = Vec::new();
        let mut push = |what: String, path: String, query: String, ct, body| {
            bad.push(Bad {
                what,
                path,
                query,
                content_type: ct,
                body,
            })
        };

        // Path ids that name nothing.
        if path.contains('{') {
            for id in ["%FF%FE", "-1", "0", "%00", "..%2F..", &"x".repeat(4096)] {
                let json_body = base_body(&method, &path).map(|b| b.to_string().into_bytes());
                let ct = json_body.as_ref().map(|_| "application/json");
                push(
                    format!("path id {id:.20}"),
                    fill(&path, id),
                    String::new(),
                    ct,
                    json_body,
                );
            }
        }

        // Query values outside the parameter's schema.
        for p in params.iter().filter(|p| p["in"] == "query") {
            let name = p["name"].as_str().unwrap();
            let schema = &p["schema"];
            let mut values: Vec<String> = Vec::new();
            if allowed_types(&doc, schema).iter().any(|t| t == "integer") {
                values.extend(
                    ["abc", "1.5", "99999999999999999999999", "1e400", "%FF"].map(String::from),
                );
                if let Some(min) = schema["minimum"].as_i64() {
                    values.push((min - 1).to_string());
                }
                if let Some(max) = schema["maximum"].as_i64() {
                    values.push((max + 1).to_string());
                }
            }
            if enum_of(&doc, schema).is_some() {
                values.extend(["bogus", "%FF", "JSON"].map(String::from));
            }
            values.push("a%00b".into());
            for v in values {
                push(
                    format!("query {name}={v}"),
                    valid_path.clone(),
                    format!("?{name}={v}"),
                    None,
                    None,
                );
            }
        }

        // Bodies.
        if op["requestBody"].is_object() {
            let content = op["requestBody"]["content"].as_object().unwrap();
            assert!(content.contains_key("application/json"), "{method} {path}");
            let base = base_body(&method, &path)
                .unwrap_or_else(|| panic!("{method} {path}: add a valid body to base_body()"));
            let schema = resolve(&doc, &content["application/json"]["schema"]).clone();
            let json_ct = Some("application/json");
            let p = valid_path.clone();
            push(
                "not JSON".into(),
                p.clone(),
                String::new(),
                json_ct,
                Some(b"{\"to\": ".to_vec()),
            );
            push(
                "trailing garbage".into(),
                p.clone(),
                String::new(),
                json_ct,
                Some(format!("{base} x").into_bytes()),
            );
            push(
                "not UTF-8".into(),
                p.clone(),
                String::new(),
                json_ct,
                Some(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
            );
            push(
                "wrong content type".into(),
                p.clone(),
                String::new(),
                Some("text/plain"),
                Some(base.to_string().into_bytes()),
            );
            push(
                "no content type".into(),
                p.clone(),
                String::new(),
                None,
                Some(base.to_string().into_bytes()),
            );
            let mut huge = base.clone();
            huge["padding"] = json!("x".repeat(limit));
            push(
                "over BODY_LIMIT".into(),
                p.clone(),
                String::new(),
                json_ct,
                Some(huge.to_string().into_bytes()),
            );
            for top in [json!([base.clone()]), json!(7), json!("text"), Value::Null] {
                push(
                    format!("a {top:.10} body"),
                    p.clone(),
                    String::new(),
                    json_ct,
                    Some(top.to_string().into_bytes()),
                );
            }
            let mut unknown = base.clone();
            unknown["no_such_field"] = json!(1);
            push(
                "unknown field".into(),
                p.clone(),
                String::new(),
                json_ct,
                Some(unknown.to_string().into_bytes()),
            );
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for required in schema["required"].as_array().into_iter().flatten() {
                let mut body = base.clone();
                body.as_object_mut()
                    .unwrap()
                    .remove(required.as_str().unwrap());
                push(
                    format!("without {required}"),
                    p.clone(),
                    String::new(),
                    json_ct,
                    Some(body.to_string().into_bytes()),
                );
            }
            for (name, field) in &properties {
                let types = allowed_types(&doc, field);
                if types.iter().any(|t| t == "string") {
                    // No text anywhere may hold NUL (Postgres refuses it).
                    let mut body = base.clone();
                    body[name] = json!("a\u{0}b");
                    push(
                        format!("NUL in {name}"),
                        p.clone(),
                        String::new(),
                        json_ct,
                        Some(body.to_string().into_bytes()),
                    );
                }
                if types.iter().any(|t| t == "array") && base[name].is_array() {
                    let mut body = base.clone();
                    body[name] = json!(["a\u{0}b"]);
                    push(
                        format!("NUL in {name}[0]"),
                        p.clone(),
                        String::new(),
                        json_ct,
                        Some(body.to_string().into_bytes()),
                    );
                }
                for wrong in wrong_values(&types) {
                    let mut body = base.clone();
                    body[name] = wrong.clone();
                    push(
                        format!("{name} = {wrong}"),
                        p.clone(),
                        String::new(),
                        json_ct,
                        Some(body.to_string().into_bytes()),
                    );
                }
                let items = &field["items"];
                let enum_field = enum_of(&doc, field).or_else(|| {
                    enum_of(&doc, items).or_else(|| {
                        field["oneOf"]
                            .as_array()
                            .and_then(|o| o.iter().find_map(|s| enum_of(&doc, &s["items"])))
                    })
                });
                if let Some(values) = enum_field {
                    assert!(!values.contains(&json!("bogus")));
                    let mut body = base.clone();
                    body[name] = if base[name].is_array() {
                        json!(["bogus"])
                    } else {
                        json!("bogus")
                    };
                    push(
                        format!("{name} outside its enum"),
                        p.clone(),
                        String::new(),
                        json_ct,
                        Some(body.to_string().into_bytes()),
                    );
                }
            }
            // Random type-breaking changes, reproducible from the seed.
            let names: Vec<&String> = properties.keys().collect();
            for round in 0..20 {
                let mut body = base.clone();
                let changes = rng.random_range(1..=names.len().max(1));
                for _ in 0..changes {
                    let name = names[rng.random_range(0..names.len())];
                    let wrong = wrong_values(&allowed_types(&doc, &properties[name.as_str()]));
                    body[name.as_str()] = wrong[rng.random_range(0..wrong.len())].clone();
                }
                push(
                    format!("random {round}: {body}"),
                    p.clone(),
                    String::new(),
                    json_ct,
                    Some(body.to_string().into_bytes()),
                );
            }
        }

        if bad.is_empty() {
            continue;
        }
        covered += 1;
        for b in bad {
            let mut req = app.http.request(
                method.to_uppercase().parse().unwrap(),
                app.url(&format!("{}{}", b.path, b.query)),
            );
            let security = op["security"].to_string();
            if security.contains("admin_token") {
                req = req.bearer_auth(ADMIN_TOKEN);
            } else if security.contains("tenant_key") {
                req = req.header("X-API-Key", &key);
            }
            if let Some(ct) = b.content_type {
                req = req.header("content-type", ct);
            }
            if let Some(body) = b.body {
                req = req.body(body);
            }
            let res = req.send().await.unwrap();
            sent += 1;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            let what = format!("{method} {path} with {}: {status} {text:.300}", b.what);
            assert!((400..500).contains(&status), "{what}");
            assert!(
                op["responses"][status.to_string()].is_object(),
                "undocumented status: {what}"
            );
            let body: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {what}"));
            let errors = checker.errors(&error_schema, &body);
            assert!(errors.is_empty(), "{what}: {errors:?}");
        }
    }
    assert!(covered >= 15, "{covered} operations driven");
    assert!(sent >= 300, "{sent} requests");
    let after = snapshot(&app, &key, &tenant).await;
    assert_eq!(before, after, "a refused request changed something");
    eprintln!("{sent} malformed requests over {covered} operations, all refused, nothing changed");
}
