//! Media messages: images, documents, audio, video and stickers.
//!
//! A file the API accepts is spooled to a temporary file as it arrives
//! (hashed and counted on the way, refused once it passes its kind's
//! limit), then handed to the [`MediaStorage`] under a fresh key before
//! its message row is written. The send queue encrypts it from there,
//! uploads it to WhatsApp's media host and sends the message; once
//! WhatsApp acknowledged the send, the file is released. No step holds a
//! whole file in memory.

pub mod retention;
pub mod storage;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

pub use storage::{DiskStorage, MediaStorage};

/// The client that fetches files a send names by URL. Under the same
/// rules as tenants' webhooks: unless `allow_private`
/// (`WEBHOOK_ALLOW_PRIVATE`), a name must resolve to public addresses only
/// and a redirect may not lead to a private address either.
pub fn fetch_client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        if !allow_private && let Err(e) = crate::webhooks::guard::check_literal(attempt.url()) {
            return attempt.error(e);
        }
        attempt.follow()
    });
    let builder = reqwest::Client::builder()
        .redirect(redirects)
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("wago/", env!("CARGO_PKG_VERSION")));
    if allow_private {
        builder.build()
    } else {
        builder
            .dns_resolver(std::sync::Arc::new(crate::webhooks::guard::GuardedResolver))
            .build()
    }
}

crate::text_enum! {
    /// What a media message carries.
    pub enum MediaKind {
        Image = "image",
        Document = "document",
        Audio = "audio",
        Video = "video",
        Sticker = "sticker",
    }
}

const MIB: u64 = 1024 * 1024;

impl MediaKind {
    /// The largest file of this kind WhatsApp takes, in bytes.
    pub fn limit(self) -> u64 {
        match self {
            MediaKind::Image | MediaKind::Audio | MediaKind::Video => 16 * MIB,
            MediaKind::Sticker => MIB / 2,
            MediaKind::Document => 100 * MIB,
        }
    }

    /// The message kind the inbox and webhooks name, after the protobuf
    /// field (as inbound messages are named).
    pub fn message_kind(self) -> &'static str {
        match self {
            MediaKind::Image => "imageMessage",
            MediaKind::Document => "documentMessage",
            MediaKind::Audio => "audioMessage",
            MediaKind::Video => "videoMessage",
            MediaKind::Sticker => "stickerMessage",
        }
    }

    /// The kind of a message kind, if it is a media one.
    pub fn of_message_kind(kind: &str) -> Option<Self> {
        MediaKind::ALL
            .iter()
            .copied()
            .find(|k| k.message_kind() == kind)
    }

    /// The key-derivation label WhatsApp encrypts this kind with.
    pub fn media_type(self) -> wacore::download::MediaType {
        use wacore::download::MediaType;
        match self {
            MediaKind::Image => MediaType::Image,
            MediaKind::Document => MediaType::Document,
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Video => MediaType::Video,
            MediaKind::Sticker => MediaType::Sticker,
        }
    }

    /// The MIME type assumed when a request names none.
    pub fn default_mimetype(self) -> &'static str {
        match self {
            MediaKind::Image => "image/jpeg",
            MediaKind::Document => "application/octet-stream",
            MediaKind::Audio => "audio/ogg; codecs=opus",
            MediaKind::Video => "video/mp4",
            MediaKind::Sticker => "image/webp",
        }
    }
}

/// A file received into a temporary file, with its size and hash. The
/// file is deleted when this is dropped, unless a storage took it.
#[derive(Debug)]
pub struct Spooled {
    pub file: tempfile::TempPath,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.file
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Why a file could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the file is empty")]
    Empty,
    #[error("reading the file: {0}")]
    Source(String),
    #[error("writing the file: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `source` to a temporary file under `dir`, counting and hashing
/// it, and stops with [`SpoolError::TooLarge`] at the first chunk past
/// `limit` bytes.
pub async fn spool<S, E>(dir: &Path, source: S, limit: u64) -> Result<Spooled, SpoolError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    tokio::fs::create_dir_all(dir).await?;
    let dir: PathBuf = dir.to_owned();
    let temp = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new().prefix("spool-").tempfile_in(dir)
    })
    .await
    .map_err(std::io::Error::other)??;
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut source = std::pin::pin!(source);
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(|e| SpoolError::Source(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(SpoolError::TooLarge { limit });
        }
        hash.update(&chunk);
        file.write_all(&chunk).await?;
    }
    if size == 0 {
        return Err(SpoolError::Empty);
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(Spooled {
        file: path,
        size,
        sha256: hash.finalize().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let chunks: Vec<_> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![7u8; *n])))
            .collect();
        futures_util::stream::iter(chunks)
    }

    #[tokio::test]
    async fn a_spooled_file_is_counted_hashed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let spooled = spool(dir.path(), chunks(&[3, 4]), 7).await.unwrap();
        assert_eq!(spooled.size, 7);
        assert_eq!(std::fs::read(spooled.path()).unwrap(), vec![7u8; 7]);
        assert_eq!(spooled.sha256_hex(), hex::encode(Sha256::digest([7u8; 7])));
        let path = spooled.path().to_owned();
        drop(spooled);
        assert!(!path.exists(), "a spooled file nobody took is deleted");

        let too_large = spool(dir.path(), chunks(&[3, 4, 1]), 7).await;
        assert!(matches!(too_large, Err(SpoolError::TooLarge { limit: 7 })));
        let empty = spool(dir.path(), chunks(&[]), 7).await;
        assert!(matches!(empty, Err(SpoolError::Empty)));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "refused files leave nothing behind: {left:?}"
        );
    }

    #[test]
    fn kinds_name_their_messages_both_ways() {
        for kind in MediaKind::ALL {
            assert_eq!(MediaKind::of_message_kind(kind.message_kind()), Some(*kind));
        }
        assert_eq!(MediaKind::of_message_kind("conversation"), None);
    }
}
