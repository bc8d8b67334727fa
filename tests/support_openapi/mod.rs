//! Checking a served OpenAPI document against its server: the helpers
//! that `tests/openapi.rs` (the API) and `tests/sandbox_openapi.rs` (the
//! sandbox's control API) share.
#![allow(dead_code)]

use std::collections::BTreeSet;

use serde_json::{Value, json};

pub const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `/admin/tenants/{id}/keys/{key_id}` with every parameter filled in.
pub fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed parameter") + open;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.push((path.clone(), method.to_owned()));
            }
        }
    }
    ops
}

pub fn collect_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.insert(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Validates answers against the document: a schema for each (path,
/// method, status), with undocumented fields refused.
pub struct Checker {
    pub doc: Value,
    components: Value,
    /// `method path status` of every answer checked.
    pub checked: BTreeSet<String>,
    /// `(path, method)` of every operation with an answer checked.
    pub operations: BTreeSet<(String, String)>,
}

impl Checker {
    pub fn new(doc: Value) -> Self {
        let mut components = doc["components"].clone();
        // Strict: an object with listed properties takes no others, except
        // the parts of a flattened struct (`allOf`), checked as a whole.
        let mut parts = BTreeSet::new();
        collect_all_of_refs(&doc, false, &mut parts);
        for (name, schema) in components["schemas"].as_object_mut().unwrap() {
            if !parts.contains(&format!("#/components/schemas/{name}")) {
                forbid_extra_fields(schema);
            }
        }
        Checker {
            doc,
            components,
            checked: BTreeSet::new(),
            operations: BTreeSet::new(),
        }
    }

    pub fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.clone();
        forbid_extra_fields(&mut root);
        let root = json!({ "allOf": [root], "components": self.components });
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("the document's schema {schema} does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    pub fn schema_validates(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what}: {instance} does not match: {errors:#?}"
        );
    }

    pub fn answer(&mut self, path: &str, method: &str, status: u16, body: &Value) {
        let what = format!("{method} {path} {status}");
        let response = &self.doc["paths"][path][method]["responses"][status.to_string()];
        assert!(response.is_object(), "{what} is not documented");
        let content = &response["content"];
        if content.is_null() {
            assert!(
                body.is_null(),
                "{what} has a body the document does not describe: {body}"
            );
        } else {
            let schema = content["application/json"]["schema"].clone();
            assert!(!schema.is_null(), "{what} has no JSON schema");
            self.schema_validates(&schema, body, &what);
        }
        self.checked.insert(what);
        self.operations.insert((path.to_owned(), method.to_owned()));
    }

    /// An answer that is not JSON: its content type must be the documented
    /// one, with a string schema.
    pub async fn call_text(
        &mut self,
        req: reqwest::RequestBuilder,
        path: &str,
        expect: u16,
    ) -> String {
        let req = req.build().unwrap();
        let method = req.method().as_str().to_lowercase();
        let res = reqwest::Client::new().execute(req).await.unwrap();
        let what = format!("{method} {path} {}", res.status().as_u16());
        assert_eq!(res.status().as_u16(), expect, "{what}");
        let content_type = res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let response = &self.doc["paths"][path][method.as_str()]["responses"][expect.to_string()];
        let schema = &response["content"][content_type.as_str()]["schema"];
        assert_eq!(
            schema["type"], "string",
            "{what}: {content_type} is not documented"
        );
        self.checked.insert(what);
        self.operations.insert((path.to_owned(), method));
        res.text().await.unwrap()
    }

    pub async fn call(&mut self, req: reqwest::RequestBuilder, path: &str, expect: u16) -> Value {
        let req = req.build().unwrap();
        let method = req.method().as_str().to_lowercase();
        let res = reqwest::Client::new().execute(req).await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text}"))
        };
        assert_eq!(status, expect, "{method} {path}: {body}");
        self.answer(path, &method, status, &body);
        body
    }
}

fn collect_all_of_refs(value: &Value, inside: bool, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match k.as_str() {
                    "$ref" if inside => {
                        out.insert(v.as_str().unwrap().to_owned());
                    }
                    "allOf" => collect_all_of_refs(v, true, out),
                    _ => collect_all_of_refs(v, false, out),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_all_of_refs(v, inside, out)),
        _ => {}
    }
}

fn forbid_extra_fields(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let closed = map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("allOf");
            if closed {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in map.iter_mut() {
                // A flattened struct's parts are checked as a whole.
                if k != "allOf" {
                    forbid_extra_fields(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_extra_fields),
        _ => {}
    }
}

/// Sends every documented operation, its path parameters filled with a
/// value that names nothing, and every other method on a documented path.
/// A documented operation must reach its handler: not 405, not the
/// router's fallback (whose message is `fallback`), and with a status the
/// document lists. Anything else must be a JSON 405.
pub async fn probe_routes(http: &reqwest::Client, base: &str, doc: &Value, fallback: &str) {
    for (path, method) in operations(doc) {
        let url = format!("{base}{}", fill(&path, "no-such-thing"));
        let res = http
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert_ne!(body["message"], fallback, "{method} {path} is not served");
        assert!(
            doc["paths"][&path][&method]["responses"][status.to_string()].is_object(),
            "{method} {path} answered an undocumented {status}: {body}"
        );
        for other in METHODS {
            if doc["paths"][&path].get(other).is_some() {
                continue;
            }
            let url = format!("{base}{}", fill(&path, "x"));
            let res = http
                .request(other.to_uppercase().parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                405,
                "{other} {path} is served but not documented"
            );
            let body: Value = res.json().await.unwrap_or(Value::Null);
            assert_eq!(body["error"], "method_not_allowed", "{other} {path}");
        }
    }
    let res = http
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(body["message"], fallback);
}
