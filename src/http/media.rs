//! Media sends: `POST /send-image`, `/send-document`, `/send-audio`,
//! `/send-video` and `/send-sticker`.
//!
//! The file comes as the `file` part of a `multipart/form-data` body, or
//! as a `url` in a JSON body that WAGO downloads (under the webhooks'
//! private-address rules). Either way it is spooled to disk as it
//! arrives, hashed, and refused with 413 past its kind's limit; then it is
//! kept in the media storage and the send is written and queued like a
//! text (`send.rs`): the same pace, the same `Idempotency-Key`, the same
//! answers. The file is released once WhatsApp acknowledged the send.

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{TenantAuth, parse_json};
use super::send::{
    SendAnswer, answer, check_text, dispatch, idempotency_key, ready_to_send, timed,
};
use crate::media::storage::new_key;
use crate::media::{MediaKind, SpoolError, Spooled, spool};
use crate::sessions::{Phone, new_message_id};
use crate::store::media::{MediaState, NewMedia};
use crate::store::messages::{Accepted, NewOutbound};
use crate::tenants::TenantId;

/// What a multipart body may hold besides the file, at most, in bytes.
const FIELDS_ALLOWANCE: u64 = 256 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    let limited = |router: OpenApiRouter<AppState>, kind: MediaKind| {
        router.layer(DefaultBodyLimit::max(
            (kind.limit() + FIELDS_ALLOWANCE) as usize,
        ))
    };
    OpenApiRouter::new()
        .merge(limited(
            OpenApiRouter::new().routes(routes!(send_image)),
            MediaKind::Image,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(send_document)),
            MediaKind::Document,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(send_audio)),
            MediaKind::Audio,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(send_video)),
            MediaKind::Video,
        ))
        .merge(limited(
            OpenApiRouter::new().routes(routes!(send_sticker)),
            MediaKind::Sticker,
        ))
}

/// A media send as `multipart/form-data`.
#[derive(ToSchema)]
#[allow(dead_code)] // the schema of a body read part by part
struct MediaForm {
    /// The recipient's phone number, digits with an optional `+`.
    #[schema(example = "62812000002")]
    to: String,
    /// The file. Its part's file name and content type are the defaults
    /// of `file_name` and `mimetype`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Text shown with an image, a video or a document.
    caption: Option<String>,
    /// The file's name as the recipient sees it (documents).
    file_name: Option<String>,
    /// The file's MIME type (default: the part's content type, else the
    /// kind's usual one).
    mimetype: Option<String>,
    /// Audio only: send it as a voice note (`true`) rather than a file.
    voice: Option<bool>,
    /// Accept the send while the session is not connected.
    queue: Option<bool>,
}

/// A media send whose file WAGO downloads.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MediaUrl {
    /// The recipient's phone number, digits with an optional `+`.
    #[schema(example = "62812000002")]
    to: String,
    /// An `http://` or `https://` URL of the file; private addresses are
    /// refused unless `WEBHOOK_ALLOW_PRIVATE` is set.
    #[schema(example = "https://example.com/invoice.pdf")]
    url: String,
    caption: Option<String>,
    /// Default: the URL's last path segment.
    file_name: Option<String>,
    /// Default: the download's `Content-Type`, else the kind's usual one.
    mimetype: Option<String>,
    #[serde(default)]
    voice: bool,
    #[serde(default)]
    queue: bool,
}

/// Fields of a media send, as read, before they are checked.
#[derive(Default)]
struct Fields {
    to: Option<String>,
    caption: Option<String>,
    file_name: Option<String>,
    mimetype: Option<String>,
    voice: bool,
    queue: bool,
}

/// The file of a media send, spooled, with what its source said of it.
struct Source {
    file: Spooled,
    file_name: Option<String>,
    mimetype: Option<String>,
}

macro_rules! media_route {
    ($name:ident, $path:literal, $kind:expr, $what:literal) => {
        #[doc = concat!("Send ", $what, ": the file as `multipart/form-data` (part `file`) or as a `url` in JSON. Written before it goes and sent at the number's pace, as `/send-text`; the answer waits for WhatsApp's acknowledgement (up to 30 s).")]
        #[utoipa::path(
            post,
            path = $path,
            tag = "send",
            security(("tenant_key" = []), ("tenant_bearer" = [])),
            params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a request repeated with the same key gets the first one's answer, and nothing is sent twice.")),
            request_body(content(
                (MediaForm = "multipart/form-data"),
                (MediaUrl = "application/json"),
            )),
            responses(
                (status = 200, description = "Sent (acknowledged by WhatsApp), or `failed` (refused by it).", body = SendAnswer),
                (status = 202, description = "Accepted and queued (see `/send-text`).", body = SendAnswer),
                (status = 413, description = "The file is larger than WhatsApp's limit for its kind (`payload_too_large`, the limit named).", body = ErrorBody),
                (status = 422, description = "A field is missing or wrong, or the URL cannot be fetched (`invalid_field`).", body = ErrorBody),
                (status = 503, description = "The session is not connected (`session_not_connected`); send with `queue` to have it go later.", body = ErrorBody),
            ),
        )]
        async fn $name(
            auth: TenantAuth,
            State(state): State<AppState>,
            headers: HeaderMap,
            request: Request,
        ) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
            timed(send_media(&state, &auth.tenant_id, $kind, &headers, request)).await
        }
    };
}

media_route!(
    send_image,
    "/send-image",
    MediaKind::Image,
    "an image (16 MiB at most)"
);
media_route!(
    send_document,
    "/send-document",
    MediaKind::Document,
    "a document (100 MiB at most)"
);
media_route!(
    send_audio,
    "/send-audio",
    MediaKind::Audio,
    "audio, as a voice note or a file (16 MiB at most)"
);
media_route!(
    send_video,
    "/send-video",
    MediaKind::Video,
    "a video (16 MiB at most)"
);
media_route!(
    send_sticker,
    "/send-sticker",
    MediaKind::Sticker,
    "a sticker, a WebP image (512 KiB at most)"
);

async fn send_media(
    state: &AppState,
    tenant: &TenantId,
    kind: MediaKind,
    headers: &HeaderMap,
    request: Request,
) -> ApiResult<(StatusCode, Json<SendAnswer>)> {
    let key = idempotency_key(headers)?;
    if let Some(key) = &key
        && let Some(first) = state.store.find_idempotent_send(tenant, key).await?
    {
        return Ok(answer(&first));
    }
    let (fields, source) = read_request(state, kind, request).await?;
    let send = check(kind, fields, &source)?;
    let (connected, sender) = ready_to_send(state, tenant, send.queue).await?;

    let storage_key = new_key(tenant);
    let (size, sha256) = (source.file.size, source.file.sha256_hex());
    state
        .media
        .storage
        .put(&storage_key, source.file)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("keeping the file: {e}")))?;
    let message_id = new_message_id();
    let chat_id = send.to.jid();
    let row = NewOutbound {
        message_id: &message_id,
        chat_id: &chat_id,
        kind: kind.message_kind(),
        text: send.caption.as_deref().unwrap_or_default(),
        idempotency_key: key.as_deref(),
    };
    let media = NewMedia {
        kind,
        mimetype: &send.mimetype,
        file_name: send.file_name.as_deref(),
        size,
        sha256: &sha256,
        voice: send.voice,
        state: MediaState::Stored,
        storage_key: Some(&storage_key),
        error: None,
        remote: None,
    };
    let accepted = state
        .store
        .accept_media_send(tenant, &sender, &row, &media)
        .await;
    let row = match accepted {
        Ok(Accepted::New(row)) => row,
        other => {
            // Nothing names the file: a repeat answers as the first send did.
            if let Err(e) = state.media.storage.delete(&storage_key).await {
                tracing::warn!(error = %e, "cannot delete an unused file");
            }
            match other? {
                Accepted::Repeat(first) => return Ok(answer(&first)),
                Accepted::New(_) => unreachable!("handled above"),
            }
        }
    };
    dispatch(state, tenant, row, connected).await
}

/// A checked media send.
struct Send {
    to: Phone,
    caption: Option<String>,
    file_name: Option<String>,
    mimetype: String,
    voice: bool,
    queue: bool,
}

fn check(kind: MediaKind, fields: Fields, source: &Source) -> ApiResult<Send> {
    let to = fields
        .to
        .ok_or_else(|| ApiError::invalid("to", "is required"))?;
    let to = Phone::parse(&to).map_err(|e| ApiError::invalid("to", e))?;
    let caption = match fields.caption {
        Some(_) if matches!(kind, MediaKind::Audio | MediaKind::Sticker) => {
            return Err(ApiError::invalid(
                "caption",
                format!("a {kind} carries no caption"),
            ));
        }
        Some(caption) if caption.trim().is_empty() => None,
        Some(caption) => Some(check_text("caption", caption)?),
        None => None,
    };
    if fields.voice && kind != MediaKind::Audio {
        return Err(ApiError::invalid(
            "voice",
            "only audio is sent as a voice note",
        ));
    }
    let file_name = match fields.file_name.or_else(|| source.file_name.clone()) {
        Some(name) => Some(check_file_name(name)?),
        None if kind == MediaKind::Document => Some("file".to_owned()),
        None => None,
    };
    let mimetype = match fields.mimetype {
        Some(given) => check_mimetype(kind, &given)?,
        // What the source said, where it fits the kind.
        None => source
            .mimetype
            .as_deref()
            .and_then(|m| check_mimetype(kind, m).ok())
            .filter(|m| m != "application/octet-stream" || kind == MediaKind::Document)
            .unwrap_or_else(|| kind.default_mimetype().to_owned()),
    };
    Ok(Send {
        to,
        caption,
        file_name,
        mimetype,
        voice: fields.voice,
        queue: fields.queue,
    })
}

fn check_file_name(name: String) -> ApiResult<String> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::invalid(
            "file_name",
            "must be 1 to 255 characters",
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(ApiError::invalid(
            "file_name",
            "must not hold slashes or control characters",
        ));
    }
    Ok(name)
}

/// A MIME type that fits the kind (an image is `image/…`, and so on).
fn check_mimetype(kind: MediaKind, given: &str) -> ApiResult<String> {
    let mimetype = given.trim().to_ascii_lowercase();
    let essence = mimetype.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    let well_formed = mimetype.len() <= 255
        && mimetype
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control())
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s));
    if !well_formed {
        return Err(ApiError::invalid(
            "mimetype",
            "must be a MIME type such as image/png",
        ));
    }
    let fits = match kind {
        MediaKind::Image => essence.starts_with("image/"),
        MediaKind::Video => essence.starts_with("video/"),
        MediaKind::Audio => essence.starts_with("audio/"),
        MediaKind::Sticker => essence == "image/webp",
        MediaKind::Document => true,
    };
    if !fits {
        let want = match kind {
            MediaKind::Sticker => "image/webp".to_owned(),
            other => format!("{other}/…"),
        };
        return Err(ApiError::invalid(
            "mimetype",
            format!("{essence} is not a type for a {kind} (want {want})"),
        ));
    }
    Ok(mimetype)
}

/// Reads the fields and spools the file, from either kind of body.
async fn read_request(
    state: &AppState,
    kind: MediaKind,
    request: Request,
) -> ApiResult<(Fields, Source)> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        read_form(state, kind, request).await
    } else if content_type.starts_with("application/json") {
        let body = axum::body::to_bytes(request.into_body(), state.body_limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge {
                limit: state.body_limit,
            })?;
        let input: MediaUrl = parse_json(&body)?;
        let fields = Fields {
            to: Some(input.to),
            caption: input.caption,
            file_name: input.file_name,
            mimetype: input.mimetype,
            voice: input.voice,
            queue: input.queue,
        };
        let source = fetch(state, kind, &input.url).await?;
        Ok((fields, source))
    } else {
        Err(ApiError::BadRequest(
            "send the file as multipart/form-data (part `file`), or its URL as JSON \
             (Content-Type: application/json)"
                .into(),
        ))
    }
}

async fn read_form(
    state: &AppState,
    kind: MediaKind,
    request: Request,
) -> ApiResult<(Fields, Source)> {
    let form_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::FileTooLarge {
                kind: kind.as_str(),
                limit: kind.limit(),
            }
        } else {
            ApiError::BadRequest(format!("cannot read the form: {}", e.body_text()))
        }
    };
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("cannot read the form: {}", e.body_text())))?;
    let mut fields = Fields::default();
    let mut source: Option<Source> = None;
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if source.is_some() {
                return Err(ApiError::invalid("file", "send one file per message"));
            }
            let file_name = field.file_name().map(str::to_owned);
            let mimetype = field.content_type().map(str::to_owned);
            let file = match spool(state.media.storage.spool_dir(), field, kind.limit()).await {
                Ok(file) => file,
                Err(e) => {
                    // Read what is left (the route's body limit bounds it),
                    // so that the client, still sending, hears the answer.
                    while let Ok(Some(mut rest)) = form.next_field().await {
                        while let Ok(Some(_)) = rest.chunk().await {}
                    }
                    return Err(spool_error(kind, "file", e));
                }
            };
            source = Some(Source {
                file,
                file_name,
                mimetype,
            });
            continue;
        }
        let value = field.text().await.map_err(form_error)?;
        let flag = |field: &str, value: &str| match value.trim() {
            "true" | "1" | "on" => Ok(true),
            "false" | "0" | "off" | "" => Ok(false),
            _ => Err(ApiError::invalid(field, "must be true or false")),
        };
        match name.as_str() {
            "to" => fields.to = Some(value),
            "caption" => fields.caption = Some(value),
            "file_name" => fields.file_name = Some(value),
            "mimetype" => fields.mimetype = Some(value),
            "voice" => fields.voice = flag("voice", &value)?,
            "queue" => fields.queue = flag("queue", &value)?,
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of this form (to, file, caption, file_name, mimetype, voice, queue)",
                ));
            }
        }
    }
    let source = source.ok_or_else(|| ApiError::invalid("file", "is required"))?;
    Ok((fields, source))
}

/// Downloads the file a send names by URL.
async fn fetch(state: &AppState, kind: MediaKind, raw: &str) -> ApiResult<Source> {
    let url = super::webhooks::parse_url(raw, state.allow_private_webhooks)?;
    let failed =
        |e: &dyn std::fmt::Display| ApiError::invalid("url", format!("cannot fetch it: {e}"));
    let response = state
        .media_fetch
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(&error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(failed(&format!(
            "the server answered {}",
            response.status()
        )));
    }
    if response.content_length().is_some_and(|n| n > kind.limit()) {
        return Err(ApiError::FileTooLarge {
            kind: kind.as_str(),
            limit: kind.limit(),
        });
    }
    let mimetype = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let file_name = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|s| !s.is_empty())
        .map(percent_decode);
    let file = spool(
        state.media.storage.spool_dir(),
        response.bytes_stream(),
        kind.limit(),
    )
    .await
    .map_err(|e| spool_error(kind, "url", e))?;
    Ok(Source {
        file,
        file_name,
        mimetype,
    })
}

fn percent_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("n={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| segment.to_owned())
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        line.push_str(": ");
        line.push_str(&inner.to_string());
        cause = inner.source();
    }
    line
}

fn spool_error(kind: MediaKind, field: &str, e: SpoolError) -> ApiError {
    match e {
        SpoolError::TooLarge { limit } => ApiError::FileTooLarge {
            kind: kind.as_str(),
            limit,
        },
        SpoolError::Empty => ApiError::invalid(field, "the file is empty"),
        SpoolError::Source(why) if why.contains("length limit") => ApiError::FileTooLarge {
            kind: kind.as_str(),
            limit: kind.limit(),
        },
        SpoolError::Source(why) => ApiError::invalid(field, format!("cannot read the file: {why}")),
        SpoolError::Io(e) => ApiError::Internal(anyhow::anyhow!("spooling the file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimetypes_must_fit_their_kind() {
        assert_eq!(
            check_mimetype(MediaKind::Image, "Image/PNG").unwrap(),
            "image/png"
        );
        assert!(check_mimetype(MediaKind::Image, "video/mp4").is_err());
        assert!(check_mimetype(MediaKind::Sticker, "image/png").is_err());
        assert!(check_mimetype(MediaKind::Document, "application/pdf").is_ok());
        assert!(check_mimetype(MediaKind::Audio, "audio/ogg; codecs=opus").is_ok());
        for bad in ["", "image", "image/", "/png", "image/p ng", "image/p\ng"] {
            assert!(check_mimetype(MediaKind::Document, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names_are_plain() {
        assert_eq!(check_file_name(" a.pdf ".into()).unwrap(), "a.pdf");
        for bad in ["", "../x", "a\\b", "a\nb"] {
            assert!(check_file_name(bad.into()).is_err(), "{bad:?}");
        }
        assert!(check_file_name("x".repeat(256)).is_err());
        assert_eq!(percent_decode("invoice%20May.pdf"), "invoice May.pdf");
    }
}
