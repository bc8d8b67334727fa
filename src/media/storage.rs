//! Where media files are kept: one trait, chosen per server.
//!
//! A key is `{tenant}/{uuid}`, made by WAGO; backends treat it as an
//! opaque name. Every method streams: none reads a whole file into memory.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::AsyncRead;

use super::Spooled;

/// A reader of a kept file.
pub type MediaReader = Pin<Box<dyn AsyncRead + Send>>;

/// A kept file as a local path: the file itself where the storage is the
/// local disk, else a temporary copy deleted on drop.
pub enum LocalFile {
    Kept(PathBuf),
    Copy(tempfile::TempPath),
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        match self {
            LocalFile::Kept(path) => path,
            LocalFile::Copy(path) => path,
        }
    }
}

#[async_trait::async_trait]
pub trait MediaStorage: Send + Sync + 'static {
    /// Its name in logs and in `GET /admin/status`.
    fn name(&self) -> &'static str;

    /// Where files are spooled before [`put`](Self::put) takes them.
    fn spool_dir(&self) -> &Path;

    /// Keeps a spooled file under `key`.
    async fn put(&self, key: &str, file: Spooled) -> io::Result<()>;

    /// Reads the file kept under `key`; `None` when there is none.
    async fn open(&self, key: &str) -> io::Result<Option<MediaReader>>;

    /// The file kept under `key` as a local path (for encryption, which
    /// reads it synchronously); `NotFound` when there is none.
    async fn local(&self, key: &str) -> io::Result<LocalFile>;

    /// Deletes the file kept under `key`; deleting a missing one is no
    /// error.
    async fn delete(&self, key: &str) -> io::Result<()>;

    /// Deletes every file of a tenant (the tenant is being deleted).
    async fn delete_tenant(&self, tenant: &crate::tenants::TenantId) -> io::Result<()>;
}

/// A fresh key for one of `tenant`'s files.
pub fn new_key(tenant: &crate::tenants::TenantId) -> String {
    format!("{}/{}", tenant.as_str(), uuid::Uuid::new_v4().simple())
}

/// Files under a directory of the local disk (`MEDIA_DIR`), one
/// sub-directory per tenant; spooled files wait in its `.spool`.
pub struct DiskStorage {
    root: PathBuf,
    spool: PathBuf,
}

impl DiskStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let spool = root.join(".spool");
        DiskStorage { root, spool }
    }

    /// The path of `key`, which must be two plain names (`tenant/file`):
    /// nothing in a key may lead outside the root.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let plain = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        match key.split_once('/') {
            Some((tenant, file)) if plain(tenant) && plain(file) => {
                Ok(self.root.join(tenant).join(file))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a media key: {key:?}"),
            )),
        }
    }
}

#[async_trait::async_trait]
impl MediaStorage for DiskStorage {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    async fn put(&self, key: &str, file: Spooled) -> io::Result<()> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // The spool is under the root, so this is a rename on one file
        // system; `persist` keeps the file from being deleted on drop.
        let temp = file.file;
        tokio::task::spawn_blocking(move || temp.persist(&path).map_err(|e| e.error))
            .await
            .map_err(io::Error::other)?
    }

    async fn open(&self, key: &str) -> io::Result<Option<MediaReader>> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => Ok(Some(Box::pin(file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn local(&self, key: &str) -> io::Result<LocalFile> {
        let path = self.path(key)?;
        tokio::fs::metadata(&path).await?;
        Ok(LocalFile::Kept(path))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn delete_tenant(&self, tenant: &crate::tenants::TenantId) -> io::Result<()> {
        // The directory of a key `tenant/x`: checked like any key.
        let dir = self.path(&format!("{}/x", tenant.as_str()))?;
        let Some(dir) = dir.parent() else {
            return Ok(());
        };
        match tokio::fs::remove_dir_all(dir).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;
    use crate::media::spool;

    #[tokio::test]
    async fn the_disk_keeps_reads_and_deletes_files_under_plain_keys() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStorage::new(dir.path());
        let source = futures_util::stream::iter([Ok::<_, io::Error>(bytes::Bytes::from("halo"))]);
        let spooled = spool(disk.spool_dir(), source, 10).await.unwrap();
        disk.put("t1/abc", spooled).await.unwrap();

        let mut read = String::new();
        let mut reader = disk.open("t1/abc").await.unwrap().expect("kept");
        reader.read_to_string(&mut read).await.unwrap();
        assert_eq!(read, "halo");
        assert_eq!(
            std::fs::read(disk.local("t1/abc").await.unwrap().path()).unwrap(),
            b"halo"
        );

        disk.delete("t1/abc").await.unwrap();
        assert!(disk.open("t1/abc").await.unwrap().is_none());
        disk.delete("t1/abc").await.unwrap();
        assert_eq!(
            disk.local("t1/abc").await.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        let spooled = spool(
            disk.spool_dir(),
            futures_util::stream::iter([Ok::<_, io::Error>(bytes::Bytes::from("x"))]),
            10,
        )
        .await
        .unwrap();
        disk.put("t1/def", spooled).await.unwrap();
        disk.delete_tenant(&crate::tenants::TenantId::from_raw("t1"))
            .await
            .unwrap();
        assert!(disk.open("t1/def").await.unwrap().is_none());
        assert!(!dir.path().join("t1").exists());
        for bad in ["../x", "t1/../../x", "t1", "t1/a/b", "/etc/passwd"] {
            assert!(disk.open(bad).await.is_err(), "{bad} is refused");
        }
    }
}
