//! The media host: what `media_conn` announces, where clients upload the
//! encrypted blobs of images, documents, audio, video and stickers, and
//! where they download them again.
//!
//! Clients encrypt media themselves (AES-256-CBC and a 10-byte HMAC, under
//! keys derived from a random media key that only the message carries), so
//! the host holds ciphertext it cannot read. What it can check, it checks:
//! an upload must carry the host's `auth`, and its body must hash to the
//! SHA-256 its path names (the client's `file_enc_sha256`). A download
//! answers the exact bytes uploaded, by the path the upload answered; it
//! needs no `auth`, as a client that lost its connection still downloads.
//!
//! Blobs are kept in memory, the oldest dropped first past
//! [`SandboxConfig::media_capacity`](crate::SandboxConfig::media_capacity)
//! bytes, and not in the state file.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wacore::download::{DownloadUtils, Downloadable};
use wacore::iq::mediaconn::{HostType, MediaConnHostExtended, MediaConnResponseExtended};
use wacore::protocol::ProtocolNode as _;
use wacore_binary::Node;

use super::accounts::ReceivedMedia;
use super::server::Shared;

/// The largest upload the host takes: WhatsApp's own limit for documents.
pub const MAX_UPLOAD: usize = 100 * 1024 * 1024;

/// How long a client may keep a `media_conn` answer (seconds).
const CONN_TTL: u64 = 3600;

/// The prefix of every download path.
const BLOB_PREFIX: &str = "/v/sandbox";

/// The encrypted blobs, oldest first, within a byte budget.
pub(crate) struct MediaStore {
    /// What uploads must carry as `auth`; URL-safe, so it needs no escaping.
    auth: String,
    /// `host:port` as announced to clients.
    host: String,
    capacity: usize,
    blobs: Mutex<Blobs>,
}

#[derive(Default)]
struct Blobs {
    by_name: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl MediaStore {
    /// A host for a sandbox listening on `addr` (an unspecified address is
    /// announced as loopback, which every client here can reach).
    pub fn new(addr: SocketAddr, capacity: usize) -> Self {
        let mut announced = addr;
        if announced.ip().is_unspecified() {
            announced.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let auth: [u8; 24] = rand::rng().random();
        Self {
            auth: URL_SAFE_NO_PAD.encode(auth),
            host: announced.to_string(),
            capacity,
            blobs: Mutex::default(),
        }
    }

    /// What uploads must carry as `auth`.
    pub fn auth(&self) -> &str {
        &self.auth
    }

    /// The `<media_conn>` answer: the auth and this host.
    pub fn conn_node(&self) -> Node {
        let host = MediaConnHostExtended::simple(self.host.clone(), HostType::Primary);
        MediaConnResponseExtended::mock(self.auth.clone(), CONN_TTL, vec![host]).into_node()
    }

    /// Keeps a blob under `name`; drops the oldest ones past the budget.
    fn put(&self, name: String, blob: Bytes) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = blobs.by_name.insert(name.clone(), blob.clone()) {
            // The same content again: same name, same bytes.
            blobs.bytes -= old.len();
        } else {
            blobs.order.push_back(name);
        }
        blobs.bytes += blob.len();
        while blobs.bytes > self.capacity {
            let Some(oldest) = blobs.order.pop_front() else {
                break;
            };
            if let Some(gone) = blobs.by_name.remove(&oldest) {
                blobs.bytes -= gone.len();
            }
        }
    }

    fn get(&self, name: &str) -> Option<Bytes> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.by_name.get(name).cloned()
    }

    /// Blobs held now, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        (blobs.by_name.len(), blobs.bytes)
    }
}

/// The kinds of media a phone sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An image (`ImageMessage`).
    Image,
    /// A video (`VideoMessage`).
    Video,
    /// Audio, as a file or a voice note (`AudioMessage`).
    Audio,
    /// A document (`DocumentMessage`).
    Document,
    /// A sticker (`StickerMessage`).
    Sticker,
}

impl Kind {
    fn media_type(self) -> wacore::download::MediaType {
        use wacore::download::MediaType;
        match self {
            Kind::Image => MediaType::Image,
            Kind::Video => MediaType::Video,
            Kind::Audio => MediaType::Audio,
            Kind::Document => MediaType::Document,
            Kind::Sticker => MediaType::Sticker,
        }
    }

    /// The name the host's paths and blobs use.
    fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
            Kind::Document => "document",
            Kind::Sticker => "sticker",
        }
    }

    fn default_mimetype(self) -> &'static str {
        match self {
            Kind::Image => "image/jpeg",
            Kind::Video => "video/mp4",
            Kind::Audio => "audio/ogg; codecs=opus",
            Kind::Document => "application/octet-stream",
            Kind::Sticker => "image/webp",
        }
    }
}

/// A phone encrypts `file` as a client would, keeps the blob on this host
/// (as its own upload, without the round trip) and returns the message
/// that names it.
pub(crate) fn phone_upload(
    store: &MediaStore,
    file: super::messages::PhoneMedia,
) -> Result<waproto::whatsapp::Message, super::messages::SendError> {
    use waproto::whatsapp as wa;
    let encrypted = wacore::upload::encrypt_media(&file.bytes, file.kind.media_type())
        .map_err(|e| super::messages::SendError::Media(e.to_string()))?;
    let token = URL_SAFE_NO_PAD.encode(encrypted.file_enc_sha256);
    let name = format!("{}-{token}", file.kind.name());
    let mut blob = encrypted.data_to_upload;
    if file.tamper {
        // The first byte of the ciphertext: the MAC no longer holds.
        blob[0] ^= 0x01;
    }
    store.put(name.clone(), Bytes::from(blob));
    let direct_path = format!("{BLOB_PREFIX}/{name}");
    let url = Some(format!("https://{}{direct_path}", store.host));
    let direct_path = Some(direct_path);
    let media_key = Some(encrypted.media_key.to_vec());
    let file_enc_sha256 = Some(encrypted.file_enc_sha256.to_vec());
    let file_sha256 = Some(encrypted.file_sha256.to_vec());
    let file_length = Some(file.bytes.len() as u64);
    let mimetype = Some(
        file.mimetype
            .unwrap_or_else(|| file.kind.default_mimetype().to_owned()),
    );
    let mut message = wa::Message::default();
    // The fields every kind of media message carries alike.
    macro_rules! hosted {
        ($kind:ident { $($field:ident: $value:expr),* $(,)? }) => {
            buffa::MessageField::some(wa::message::$kind {
                url,
                direct_path,
                media_key,
                file_enc_sha256,
                file_sha256,
                file_length,
                mimetype,
                $($field: $value,)*
                ..Default::default()
            })
        };
    }
    match file.kind {
        Kind::Image => {
            message.image_message = hosted!(ImageMessage {
                caption: file.caption
            })
        }
        Kind::Video => {
            message.video_message = hosted!(VideoMessage {
                caption: file.caption
            })
        }
        Kind::Audio => {
            message.audio_message = hosted!(AudioMessage {
                ptt: Some(file.voice)
            })
        }
        Kind::Document => {
            message.document_message = hosted!(DocumentMessage {
                title: file.file_name.clone(),
                file_name: file.file_name,
                caption: file.caption,
            })
        }
        Kind::Sticker => message.sticker_message = hosted!(StickerMessage {}),
    }
    Ok(message)
}

/// What a phone makes of a media file a message names: the blob fetched
/// from this host, decrypted with the message's key, and its plaintext
/// checked against the message's `file_sha256`.
pub(crate) fn receive(
    shared: &Shared,
    kind: &str,
    file: &dyn Downloadable,
    mimetype: Option<String>,
    file_name: Option<String>,
) -> ReceivedMedia {
    let opened = open(shared, file);
    let (size, sha256) = match &opened {
        Ok(plain) | Err((Some(plain), _)) => {
            (plain.len() as u64, Some(hex::encode(Sha256::digest(plain))))
        }
        Err((None, _)) => (0, None),
    };
    ReceivedMedia {
        kind: kind.to_owned(),
        mimetype,
        file_name,
        size,
        sha256,
        verified: opened.is_ok(),
        error: opened.err().map(|(_, why)| why.to_owned()),
        voice: false,
    }
}

/// The decrypted file, or why not (with the plaintext when only its hash
/// is wrong).
fn open(
    shared: &Shared,
    file: &dyn Downloadable,
) -> Result<Vec<u8>, (Option<Vec<u8>>, &'static str)> {
    let name = file
        .direct_path()
        .ok_or((None, "the message names no direct path"))?
        .strip_prefix(BLOB_PREFIX)
        .and_then(|n| n.strip_prefix('/'))
        .ok_or((None, "the direct path is not this host's"))?;
    let blob = shared
        .media
        .get(name)
        .ok_or((None, "the media host does not hold it"))?;
    let key = file
        .media_key()
        .ok_or((None, "the message carries no media key"))?;
    let plain = DownloadUtils::verify_and_decrypt(&blob, key, file.app_info()).map_err(|_| {
        (
            None,
            "the blob does not decrypt under the message's key (MAC or padding)",
        )
    })?;
    if file.file_sha256() != Some(Sha256::digest(&plain).as_slice()) {
        return Err((
            Some(plain),
            "the file's SHA-256 is not the one the message names",
        ));
    }
    Ok(plain)
}

/// The host's routes: uploads by media kind, downloads by path.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/mms/{kind}/{token}",
            post(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route(&format!("{BLOB_PREFIX}/{{name}}"), get(download))
}

#[derive(Deserialize)]
struct UploadQuery {
    auth: Option<String>,
    token: Option<String>,
}

/// What an upload answers, as WhatsApp's media host does.
#[derive(serde::Serialize)]
struct Uploaded {
    url: String,
    direct_path: String,
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path((kind, token)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    body: Bytes,
) -> Response {
    let media = &shared.media;
    if query.auth.as_deref() != Some(media.auth.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or stale media auth");
    }
    if query.token.as_deref() != Some(token.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the token query differs from the path",
        );
    }
    let Ok(claimed) = URL_SAFE_NO_PAD.decode(&token) else {
        return refuse(StatusCode::BAD_REQUEST, "the token is not base64url");
    };
    if Sha256::digest(&body).as_slice() != claimed.as_slice() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body's SHA-256 is not the one the token names",
        );
    }
    if !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return refuse(StatusCode::NOT_FOUND, "no such media kind");
    }
    // The content names the blob: the same upload twice is one blob.
    let name = format!("{kind}-{token}");
    let direct_path = format!("{BLOB_PREFIX}/{name}");
    let size = body.len();
    media.put(name, body);
    tracing::debug!(%kind, size, "media uploaded");
    let url = format!("https://{}{direct_path}", media.host);
    axum::Json(Uploaded { url, direct_path }).into_response()
}

async fn download(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.media.get(&name) {
        Some(blob) => ([(header::CONTENT_TYPE, "application/octet-stream")], blob).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            "no such media (never uploaded, or dropped)",
        ),
    }
}

/// A refusal's body.
#[derive(serde::Serialize)]
struct Refused {
    error: &'static str,
}

fn refuse(status: StatusCode, error: &'static str) -> Response {
    tracing::debug!(%status, error, "media request refused");
    (status, axum::Json(Refused { error })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_blobs_go_first_past_the_capacity() {
        let store = MediaStore::new("127.0.0.1:7000".parse().unwrap(), 10);
        store.put("a".into(), Bytes::from_static(b"1234"));
        store.put("b".into(), Bytes::from_static(b"5678"));
        // The same content again is one blob, not two.
        store.put("b".into(), Bytes::from_static(b"5678"));
        assert_eq!(store.usage(), (2, 8));
        store.put("c".into(), Bytes::from_static(b"9012"));
        assert_eq!(store.usage(), (2, 8));
        assert!(store.get("a").is_none(), "the oldest went");
        assert_eq!(store.get("b").as_deref(), Some(&b"5678"[..]));
        assert_eq!(store.get("c").as_deref(), Some(&b"9012"[..]));
    }
}
