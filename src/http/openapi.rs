//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Every route is registered with `utoipa_axum::routes!`, which adds the
//! handler to the router and its annotation to the document in one step,
//! so a route cannot be served without being described. What is said of
//! every operation alike is added here after the routes are collected:
//! the auth schemes, the errors that every route of a kind can answer,
//! and the webhook event bodies (OpenAPI `webhooks`).

use std::sync::LazyLock;

use utoipa::openapi::path::Operation;
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi as Document, PathItem, PathsBuilder, Ref, RefOr, Response,
    ResponseBuilder,
};
use utoipa::{OpenApi, ToSchema};

use super::error::ErrorBody;
use crate::events::{
    MessageReceivedEvent, MessageStatusEvent, SessionStatusEvent, WebhookTestEvent,
};

/// The tenant's key as `X-API-Key`.
pub const TENANT_KEY: &str = "tenant_key";
/// The tenant's key as `Authorization: Bearer`.
pub const TENANT_BEARER: &str = "tenant_bearer";
/// The admin token as `Authorization: Bearer`.
pub const ADMIN_TOKEN: &str = "admin_token";
/// A signed-in admin page's cookie.
pub const ADMIN_COOKIE_SCHEME: &str = "admin_cookie";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WAGO",
        description = "A multi-tenant HTTP API for WhatsApp. Each tenant owns one number, \
            linked as a companion device, and its own API keys; the admin token manages \
            tenants. Every error is `{\"error\": \"<code>\", \"message\": \"<sentence>\"}`.",
        license(name = "MIT"),
    ),
    tags(
        (name = "send", description = "Sending messages: written before they go, paced per number, idempotent."),
        (name = "messages", description = "The persisted inbox, and any message by its WhatsApp id."),
        (name = "session", description = "The tenant's WhatsApp session: state, pairing, logout."),
        (name = "webhook", description = "The tenant's webhook and its deliveries."),
        (name = "admin", description = "Tenants, keys, any tenant's session and the nodes, with the admin token."),
        (name = "service", description = "Health and this document."),
    ),
    // Schemas no body names (only parameters, or only webhooks) are listed
    // here; the rest come with their routes.
    components(schemas(
        ErrorBody,
        MessageReceivedEvent,
        MessageStatusEvent,
        SessionStatusEvent,
        WebhookTestEvent,
        super::session::QrFormat,
    )),
)]
struct ApiDoc;

/// The document the server serves, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(|| {
        let (_, _, paths) = super::routes();
        let mut doc = ApiDoc::openapi();
        doc.merge(paths);
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        finish(&mut doc);
        doc
    });
    &DOC
}

/// `document()` as JSON, with the `webhooks` section that the document
/// type does not model.
pub fn document_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut value = serde_json::to_value(document()).expect("the document serializes");
        value["webhooks"] = serde_json::to_value(webhooks()).expect("webhooks serialize");
        serde_json::to_string(&value).expect("the document serializes")
    });
    &JSON
}

/// The same document, indented for people and files (`wago openapi`,
/// `docs/openapi.json`).
pub fn document_pretty() -> String {
    let value: serde_json::Value =
        serde_json::from_str(document_json()).expect("the document is JSON");
    serde_json::to_string_pretty(&value).expect("the document serializes")
}

/// Auth schemes, and the answers every operation of a kind can give.
fn finish(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        TENANT_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A tenant's API key (`wago_…`), made by the admin API.",
        ))),
    );
    components.add_security_scheme(
        TENANT_BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A tenant's API key as a bearer token."))
                .build(),
        ),
    );
    components.add_security_scheme(
        ADMIN_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token: `ADMIN_TOKEN`, or the one generated at first start.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        ADMIN_COOKIE_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            super::extract::ADMIN_COOKIE,
            "The admin pages' session, from `POST /admin/login`; a request that \
             changes something also sends the session's `X-CSRF-Token`.",
        ))),
    );
    for item in doc.paths.paths.values_mut() {
        for (changes, op) in operations(item) {
            add_common_errors(op, changes);
        }
    }
}

/// Each operation of a path, with whether its method changes something.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, &mut item.get),
        (true, &mut item.put),
        (true, &mut item.post),
        (true, &mut item.delete),
        (true, &mut item.patch),
        (false, &mut item.head),
        (false, &mut item.options),
        (false, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(changes, op)| op.as_mut().map(|op| (changes, op)))
}

fn add_common_errors(op: &mut Operation, changes: bool) {
    let schemes: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    let tenant = schemes
        .iter()
        .any(|s| s == TENANT_KEY || s == TENANT_BEARER);
    let admin = schemes
        .iter()
        .any(|s| s == ADMIN_TOKEN || s == ADMIN_COOKIE_SCHEME);
    if admin && !schemes.iter().any(|s| s == ADMIN_COOKIE_SCHEME) {
        // Whatever takes the admin token takes a signed-in page too.
        op.security.get_or_insert_with(Vec::new).push(
            utoipa::openapi::security::SecurityRequirement::new(
                ADMIN_COOKIE_SCHEME,
                Vec::<String>::new(),
            ),
        );
    }
    use utoipa::openapi::path::ParameterIn;
    let has_params = |kind: ParameterIn| {
        op.parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == kind)
    };
    let path_params = has_params(ParameterIn::Path);
    let query_params = has_params(ParameterIn::Query);
    let has_body = op.request_body.is_some();
    // A status the operation documents already (a 503 for a session that
    // is not connected) also names the common cause.
    let mut add =
        |status: &str, description: &str| match op.responses.responses.entry(status.to_owned()) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(RefOr::T(error_response(description)));
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                if let RefOr::T(response) = entry.get_mut()
                    && !response.description.contains(description)
                {
                    response.description = format!("{} Or: {description}", response.description);
                }
            }
        };
    if tenant {
        add(
            "401",
            "No API key, or an unknown or revoked one (`unauthorized`).",
        );
        add(
            "429",
            "Over the key's request rate (`rate_limited`); `Retry-After` says when to retry.",
        );
    }
    if admin {
        add(
            "401",
            "No admin token, a wrong one, or an ended page session (`unauthorized`).",
        );
        if changes {
            add(
                "403",
                "From a signed-in admin page, without its `X-CSRF-Token` (`forbidden`).",
            );
        }
    }
    if path_params {
        add(
            "404",
            "The path names nothing: no such id, or one that cannot be read (`not_found`).",
        );
    }
    if query_params {
        add(
            "422",
            "A query parameter is not acceptable, or the query string cannot be read (`invalid_field`).",
        );
    }
    if has_body {
        add(
            "400",
            "The body is not JSON or not sent as `application/json` (`bad_request`).",
        );
        add(
            "413",
            "The body is larger than `BODY_LIMIT` (`payload_too_large`).",
        );
        add(
            "422",
            "A field is missing, of the wrong type or not acceptable (`invalid_field`, naming it).",
        );
    }
    if tenant || admin {
        add("503", "The database does not answer (`unavailable`).");
    }
    add(
        "500",
        "A fault of the server (`internal`), logged with the request id.",
    );
}

/// An error answer: the one error body, described.
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

/// What WAGO posts to a tenant's webhook, one entry per event.
fn webhooks() -> utoipa::openapi::path::Paths {
    let event = |name: &str, schema: std::borrow::Cow<'static, str>, about: &str| {
        let op = utoipa::openapi::path::OperationBuilder::new()
            .summary(Some(format!("The `{name}` event")))
            .description(Some(format!(
                "{about} Posted as JSON with the `X-Wago-Signature`, `webhook-id`, \
                 `webhook-timestamp` and `webhook-signature` headers; any 2xx answer is \
                 success, anything else is retried (see docs/webhooks.md)."
            )))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .required(Some(utoipa::openapi::Required::True))
                    .build(),
            ))
            .response(
                "2XX",
                ResponseBuilder::new().description("Received; not sent again."),
            )
            .response(
                "410",
                ResponseBuilder::new()
                    .description("Gone: the endpoint is disabled until it is set again."),
            )
            .response(
                "default",
                ResponseBuilder::new().description(
                    "Anything else: retried on `WEBHOOK_RETRY_SCHEDULE`, honouring `Retry-After`.",
                ),
            )
            .build();
        (name.to_owned(), PathItem::new(HttpMethod::Post, op))
    };
    let mut paths = PathsBuilder::new();
    for (name, item) in [
        event(
            "message.received",
            MessageReceivedEvent::name(),
            "A message came in; it is stored before WhatsApp is acknowledged.",
        ),
        event(
            "message.status",
            MessageStatusEvent::name(),
            "A sent message moved on: sent, delivered, read or failed.",
        ),
        event(
            "session.status",
            SessionStatusEvent::name(),
            "The session entered another state.",
        ),
        event(
            "webhook.test",
            WebhookTestEvent::name(),
            "Asked for with `POST /webhook/test` or from the admin page; sent whatever the webhook subscribes to.",
        ),
    ] {
        paths = paths.path(name, item);
    }
    paths.build()
}
