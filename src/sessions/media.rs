//! Media sends: the file kept for a queued message is encrypted to a
//! temporary file, streamed to WhatsApp's media host and sent as the
//! message that names it. Each attempt encrypts afresh (a new media key),
//! so a retry after a crash or a lost connection needs nothing but the
//! kept file; the message id stays the one the API answered with.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use tokio::sync::Semaphore;
use waproto::whatsapp as wa;
use whatsapp_rust::client::Client;

use crate::media::{MediaKind, MediaStorage};
use crate::store::Store;
use crate::store::messages::OutboundMessage;

/// What media sends share on a node: where files are kept, and how many
/// encryptions and uploads may run at once.
#[derive(Clone)]
pub struct MediaWork {
    pub storage: Arc<dyn MediaStorage>,
    pub jobs: Arc<Semaphore>,
}

impl std::fmt::Debug for MediaWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaWork")
            .field("storage", &self.storage.name())
            .field("jobs_free", &self.jobs.available_permits())
            .finish()
    }
}

impl MediaWork {
    pub fn new(storage: Arc<dyn MediaStorage>, jobs: u32) -> Self {
        MediaWork {
            storage,
            jobs: Arc::new(Semaphore::new(jobs.max(1) as usize)),
        }
    }
}

/// Why a media message could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum MediaSendError {
    /// The file is gone: the send can never go.
    #[error("{0}")]
    Lost(String),
    /// Anything else (the media host, the disk, the database): tried again.
    #[error("{0}")]
    Retry(String),
}

impl From<crate::store::StoreError> for MediaSendError {
    fn from(e: crate::store::StoreError) -> Self {
        MediaSendError::Retry(e.to_string())
    }
}

/// An encrypted file, read from any offset for each upload attempt, and
/// deleted once the upload no longer needs it.
struct Ciphertext {
    path: tempfile::TempPath,
    len: u64,
}

impl wacore::upload::UploadSource for Ciphertext {
    fn len(&self) -> u64 {
        self.len
    }

    fn reader_from(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Uploads the file of `row` and returns the message that sends it.
pub(super) async fn outbound_message(
    work: &MediaWork,
    store: &Store,
    client: &Client,
    row: &OutboundMessage,
    kind: MediaKind,
) -> Result<wa::Message, MediaSendError> {
    let media = store
        .media_of_row(row.id)
        .await?
        .ok_or_else(|| MediaSendError::Lost("no file is recorded for this message".into()))?;
    let Some(key) = media.storage_key.clone() else {
        return Err(MediaSendError::Lost(format!(
            "the file is no longer kept ({})",
            media.state
        )));
    };
    let _job = work
        .jobs
        .acquire()
        .await
        .map_err(|e| MediaSendError::Retry(e.to_string()))?;
    let local = match work.storage.local(&key).await {
        Ok(local) => local,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MediaSendError::Lost(
                "the file is missing from the media storage".into(),
            ));
        }
        Err(e) => return Err(MediaSendError::Retry(format!("reading the file: {e}"))),
    };
    let spool = work.storage.spool_dir().to_owned();
    let media_type = kind.media_type();
    let encrypted = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        std::fs::create_dir_all(&spool)?;
        let plain = BufReader::new(std::fs::File::open(local.path())?);
        let cipher = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&spool)?;
        let mut writer = BufWriter::new(cipher.as_file());
        let info = wacore::upload::encrypt_media_streaming(plain, &mut writer, media_type)?;
        writer.flush()?;
        drop(writer);
        let len = cipher.as_file().metadata()?.len();
        Ok((
            info,
            Ciphertext {
                path: cipher.into_temp_path(),
                len,
            },
        ))
    })
    .await
    .map_err(|e| MediaSendError::Retry(e.to_string()))?;
    let (info, ciphertext) =
        encrypted.map_err(|e| MediaSendError::Retry(format!("encrypting the file: {e:#}")))?;
    let up = client
        .upload_stream(ciphertext, info, media_type)
        .await
        .map_err(|e| MediaSendError::Retry(format!("uploading the file: {e:#}")))?;
    Ok(message(kind, &media, row.text.clone(), up))
}

/// The message that carries an uploaded file.
fn message(
    kind: MediaKind,
    media: &crate::store::media::MediaRow,
    caption: Option<String>,
    up: whatsapp_rust::upload::UploadResponse,
) -> wa::Message {
    // The fields every kind of media message carries alike.
    macro_rules! uploaded {
        ($kind:ident { $($field:ident: $value:expr),* $(,)? }) => {
            buffa::MessageField::some(wa::message::$kind {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: Some(media.mimetype.clone()),
                $($field: $value,)*
                ..Default::default()
            })
        };
    }
    let mut message = wa::Message::default();
    match kind {
        MediaKind::Image => message.image_message = uploaded!(ImageMessage { caption: caption }),
        MediaKind::Video => {
            message.video_message = uploaded!(VideoMessage {
                caption: caption,
                streaming_sidecar: up.streaming_sidecar,
            })
        }
        MediaKind::Audio => {
            message.audio_message = uploaded!(AudioMessage {
                ptt: Some(media.voice != 0),
                streaming_sidecar: up.streaming_sidecar,
            })
        }
        MediaKind::Document => {
            message.document_message = uploaded!(DocumentMessage {
                title: media.file_name.clone(),
                file_name: media.file_name.clone(),
                caption: caption,
            })
        }
        MediaKind::Sticker => message.sticker_message = uploaded!(StickerMessage {}),
    }
    message
}

/// Attempts at fetching one inbound file before it is stored as `failed`.
const FETCH_ATTEMPTS: u32 = 3;
/// The longest one attempt at fetching a file may take.
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Fetches, decrypts and checks the file of an inbound media message into
/// the media storage. The client checks the blob's MAC as it decrypts; the
/// plaintext must then hash to the message's `file_sha256`. A file that
/// cannot be had after a few attempts is recorded `failed`, with why, so
/// that the message is still stored (and acknowledged) rather than
/// redelivered for ever.
pub(super) async fn fetch_inbound(
    work: &MediaWork,
    tenant: &crate::tenants::TenantId,
    client: &Client,
    file: super::inbound::InboundFile<'_>,
) -> crate::store::media::InboundMedia {
    use crate::store::media::{InboundMedia, MediaState};
    let expected = file.downloadable.file_sha256().map(hex::encode);
    let mut media = InboundMedia {
        kind: file.kind,
        mimetype: file
            .mimetype
            .unwrap_or(file.kind.default_mimetype())
            .to_owned(),
        file_name: file.file_name.map(str::to_owned),
        size: file.downloadable.file_length().unwrap_or(0),
        sha256: expected.clone().unwrap_or_default(),
        voice: file.voice,
        state: MediaState::Failed,
        storage_key: None,
        error: None,
        remote: Some(remote_of(file.downloadable)),
    };
    let mut error = String::new();
    for attempt in 1..=FETCH_ATTEMPTS {
        match fetch_once(work, client, file.downloadable, expected.as_deref()).await {
            Ok(spooled) => {
                let key = crate::media::storage::new_key(tenant);
                media.size = spooled.size;
                media.sha256 = spooled.sha256_hex();
                match work.storage.put(&key, spooled).await {
                    Ok(()) => {
                        media.state = MediaState::Stored;
                        media.storage_key = Some(key);
                        return media;
                    }
                    Err(e) => error = format!("keeping the file: {e}"),
                }
            }
            Err(e) => error = e,
        }
        tracing::warn!(attempt, error, "cannot fetch an inbound file");
    }
    media.error = Some(error);
    media
}

/// One attempt: the file decrypted into a spooled file, its hash checked.
async fn fetch_once(
    work: &MediaWork,
    client: &Client,
    file: &dyn wacore::download::Downloadable,
    expected: Option<&str>,
) -> Result<crate::media::Spooled, String> {
    let _job = work.jobs.acquire().await.map_err(|e| e.to_string())?;
    let spool = work.storage.spool_dir().to_owned();
    let temp = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&spool)?;
        tempfile::Builder::new()
            .prefix("fetch-")
            .tempfile_in(&spool)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("spooling the file: {e}"))?;
    let (writer, path) = temp.into_parts();
    let fetched = tokio::time::timeout(FETCH_WAIT, client.download_to_writer(file, writer)).await;
    match fetched {
        Err(_) => return Err(format!("no file within {FETCH_WAIT:?}")),
        Ok(Err(e)) => return Err(format!("the download failed: {e}")),
        Ok(Ok(_)) => {}
    }
    let (size, sha256) = tokio::task::spawn_blocking({
        let path = path.to_path_buf();
        move || -> std::io::Result<(u64, [u8; 32])> {
            use sha2::Digest as _;
            let mut reader = std::fs::File::open(path)?;
            let mut hash = sha2::Sha256::new();
            let mut buffer = vec![0u8; 64 * 1024];
            let mut size = 0u64;
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hash.update(&buffer[..n]);
                size += n as u64;
            }
            Ok((size, hash.finalize().into()))
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading the file: {e}"))?;
    if let Some(expected) = expected
        && hex::encode(sha256) != expected
    {
        return Err("the file does not match the hash its message names".into());
    }
    Ok(crate::media::Spooled {
        file: path,
        size,
        sha256,
    })
}

/// What downloading a file again takes, as JSON (base64 for bytes).
fn remote_of(file: &dyn wacore::download::Downloadable) -> String {
    use base64::Engine as _;
    let b64 =
        |bytes: Option<&[u8]>| bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    serde_json::json!({
        "direct_path": file.direct_path(),
        "media_key": b64(file.media_key()),
        "file_enc_sha256": b64(file.file_enc_sha256()),
        "file_sha256": b64(file.file_sha256()),
        "file_length": file.file_length(),
    })
    .to_string()
}
