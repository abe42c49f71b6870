//! `idlegrid keygen swarm-key FILE`: writes a new pre-shared key for a private pool in
//! libp2p's (and go-libp2p's / IPFS's) `swarm.key` format. Every peer of the pool gets
//! a copy and runs with `--swarm-key FILE`; peers without it cannot connect.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use libp2p::pnet::PreSharedKey;

/// Arguments of `idlegrid keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    #[command(subcommand)]
    pub what: KeygenWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeygenWhat {
    /// A pre-shared key for a private pool (libp2p pnet), readable only by its owner.
    SwarmKey {
        /// Where to write it; an existing file is kept unless --force.
        file: PathBuf,
        /// Replace an existing file (every peer then needs the new key).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    match args.what {
        KeygenWhat::SwarmKey { file, force } => {
            let key = PreSharedKey::new(rand::random());
            let mut options = std::fs::OpenOptions::new();
            options.write(true);
            if force {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut out = options.open(&file).with_context(|| {
                format!(
                    "cannot create {}{}",
                    file.display(),
                    if file.exists() {
                        " (it exists: --force replaces it)"
                    } else {
                        ""
                    }
                )
            })?;
            out.write_all(key.to_key_file().as_bytes())
                .and_then(|()| out.sync_all())
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "wrote swarm key {} (fingerprint {}); copy it to every peer of the pool and run with --swarm-key {}",
                file.display(),
                key.fingerprint(),
                file.display()
            );
            Ok(())
        }
    }
}
