//! Small durable files of the cluster's state: written whole to a
//! temporary name, fsynced, renamed over the old one, so a crash leaves the
//! old version or the new one, never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClusterError;

fn state_err(path: &Path, source: std::io::Error) -> ClusterError {
    ClusterError::State {
        path: path.display().to_string(),
        source,
    }
}

/// Write `bytes` to `path` atomically; with `sync`, durably (fsync of the
/// file and of its directory).
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<(), ClusterError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| state_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| state_err(&tmp, e))?;
    if sync {
        f.sync_all().map_err(|e| state_err(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| state_err(path, e))?;
    if sync {
        if let Some(dir) = path.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| state_err(dir, e))?;
        }
    }
    Ok(())
}

/// Write a value as JSON, atomically.
pub fn save_json<T: Serialize>(path: &Path, value: &T, sync: bool) -> Result<(), ClusterError> {
    let bytes = serde_json::to_vec(value).map_err(ClusterError::Encode)?;
    write_atomic(path, &bytes, sync)
}

/// Read a JSON value written by [`save_json`]; `None` when the file is absent.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ClusterError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(ClusterError::Decode),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(path, e)),
    }
}
