//! One process per SQLite database.
//!
//! SQLite cannot share WhatsApp sessions between processes, so `wago serve`
//! holds an exclusive lock on `<database>.lock` for as long as it runs. The
//! lock is on a file of its own, not on the database: closing any
//! descriptor of the database file would drop SQLite's own POSIX locks.
//! The operating system releases it when the process dies, even by
//! `kill -9`, so a crashed server never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another wago process is already serving {database} (it holds {lock}). \
         SQLite allows one server per database; stop the other one, or use \
         Postgres (DSN=postgres://...) to run several nodes"
    )]
    Held { database: String, lock: String },
    #[error("cannot open the lock file {lock}: {source}")]
    Io {
        lock: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held until dropped (or the process ends).
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
    path: PathBuf,
}

impl ProcessLock {
    /// Takes the lock beside `database`, or says who has it.
    pub fn acquire(database: &Path) -> Result<Self, LockError> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let io = |source| LockError::Io {
            lock: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(ProcessLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                database: database.display().to_string(),
                lock: path.display().to_string(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
