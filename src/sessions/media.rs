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
