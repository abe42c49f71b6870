//! The peer's ed25519 identity, kept as protobuf bytes in `<data dir>/identity.key`
//! (mode 0600 on Unix). Created on first start; a corrupt file is an error, never
//! silently replaced, because replacing it would change the PeerId others trust.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// File name of the key inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read identity key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is corrupt ({reason}); move it away to create a new identity")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write identity key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the key in `data_dir`, or creates and saves a new one.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(|source| IdentityError::CreateDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            write_private(&path, &bytes).map_err(|source| IdentityError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// Writes `bytes` to a temp file readable only by the owner, then renames it into
/// place, so a crash never leaves half a key behind.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("idlegrid-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = load_or_create_identity(&dir).unwrap();
        let second = load_or_create_identity(&dir).unwrap();
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        fs::write(dir.join(IDENTITY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create_identity(&dir),
            Err(IdentityError::Corrupt { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
