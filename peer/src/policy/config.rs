//! The owner's config file (TOML), read by `serve` and `status`.
//!
//! Default location `$XDG_CONFIG_HOME/idlegrid/config.toml` (or
//! `~/.config/idlegrid/config.toml`); a missing default file means "no rules" (lend
//! whenever `serve` runs, at the lowest CPU priority), a missing `--config FILE` is an
//! error. `dist/config.example.toml` documents every field; unknown fields are
//! errors, so a typo never silently drops a rule. Command-line flags override the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

use super::{Policy, WhenUnknown, Window};
use crate::units::{parse_duration, parse_size};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// `[lend]`: when to lend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LendSection {
    pub windows: Vec<String>,
    pub idle_minutes: Option<u64>,
    pub when_unknown: Option<WhenUnknown>,
    pub max_other_load_percent: Option<f64>,
    pub check_every: Option<String>,
    pub grace: Option<String>,
}

/// `[caps]`: how much to lend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsSection {
    pub cores: Option<usize>,
    pub memory: Option<String>,
    pub disk: Option<String>,
    pub max_input: Option<String>,
}

/// `[access]`: who may use this machine.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    pub swarm_key: Option<PathBuf>,
    pub accept_from: Vec<String>,
    pub deny: Vec<String>,
    pub max_connections: Option<u32>,
    pub max_connections_per_peer: Option<u32>,
}

/// `[network]`: how to join.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    pub bootstrap: Vec<String>,
    pub listen: Vec<String>,
    pub relays: Vec<String>,
    pub relay_server: Option<bool>,
}

/// `[kernels]`: which kernels to run for others.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelsSection {
    pub wasm: Option<bool>,
    pub wasm_memory: Option<String>,
    pub wasm_fuel: Option<u64>,
    pub wasm_timeout: Option<String>,
}

/// The file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub lend: LendSection,
    pub caps: CapsSection,
    pub access: AccessSection,
    pub network: NetworkSection,
    pub kernels: KernelsSection,
}

/// The default config path.
pub fn default_path() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("idlegrid/config.toml");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".config/idlegrid/config.toml"),
        None => PathBuf::from("idlegrid.toml"),
    }
}

impl PolicyFile {
    /// Reads `path`; with `required` false a missing file gives the defaults.
    pub fn load(path: &Path, required: bool) -> Result<PolicyFile, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => PolicyFile::parse(&text).map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(PolicyFile::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<PolicyFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The lending rules.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let lend = &self.lend;
        let defaults = Policy::default();
        let windows = lend
            .windows
            .iter()
            .map(|w| w.parse::<Window>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let max_other_load = match lend.max_other_load_percent {
            Some(p) if !(p > 0.0 && p <= 100.0) => {
                return Err(ConfigError::Invalid(format!(
                    "lend.max_other_load_percent must be in (0, 100], not {p}"
                )))
            }
            p => p.map(|p| p / 100.0),
        };
        Ok(Policy {
            windows,
            idle_after: lend.idle_minutes.map(|m| Duration::from_secs(m * 60)),
            when_unknown: lend.when_unknown.unwrap_or(WhenUnknown::Idle),
            max_other_load,
            max_memory: parse_opt_size("caps.memory", &self.caps.memory)?,
            check_every: parse_opt_duration("lend.check_every", &lend.check_every)?
                .unwrap_or(defaults.check_every)
                .max(Duration::from_secs(1)),
            grace: parse_opt_duration("lend.grace", &lend.grace)?.unwrap_or(defaults.grace),
        })
    }

    /// The rules for users' WebAssembly programs (defaults where unset).
    pub fn wasm_caps(&self) -> Result<crate::worker::WasmCaps, ConfigError> {
        let defaults = crate::worker::WasmCaps::default();
        Ok(crate::worker::WasmCaps {
            enabled: self.kernels.wasm.unwrap_or(defaults.enabled),
            max_memory: parse_opt_size("kernels.wasm_memory", &self.kernels.wasm_memory)?
                .unwrap_or(defaults.max_memory),
            max_fuel: self.kernels.wasm_fuel.unwrap_or(defaults.max_fuel),
            timeout: parse_opt_duration("kernels.wasm_timeout", &self.kernels.wasm_timeout)?
                .unwrap_or(defaults.timeout),
        })
    }

    /// Blob-store cap in bytes, if set.
    pub fn disk(&self) -> Result<Option<u64>, ConfigError> {
        parse_opt_size("caps.disk", &self.caps.disk)
    }

    /// Largest accepted input blob in bytes, if set.
    pub fn max_input(&self) -> Result<Option<u64>, ConfigError> {
        parse_opt_size("caps.max_input", &self.caps.max_input)
    }

    /// Submitters whose jobs are accepted; None = everyone's.
    pub fn accept_from(&self) -> Result<Option<Vec<PeerId>>, ConfigError> {
        if self.access.accept_from.is_empty() {
            return Ok(None);
        }
        let mut peers = Vec::new();
        for item in &self.access.accept_from {
            peers.extend(parse_peer_list(item)?);
        }
        Ok(Some(peers))
    }

    pub fn deny(&self) -> Result<Vec<PeerId>, ConfigError> {
        let mut peers = Vec::new();
        for item in &self.access.deny {
            peers.extend(parse_peer_list(item)?);
        }
        Ok(peers)
    }

    pub fn bootstrap(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_addrs("network.bootstrap", &self.network.bootstrap)
    }

    pub fn listen(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_addrs("network.listen", &self.network.listen)
    }

    pub fn relays(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_addrs("network.relays", &self.network.relays)
    }
}

fn parse_addrs(field: &str, items: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    items
        .iter()
        .map(|a| {
            a.parse().map_err(|e| {
                ConfigError::Invalid(format!("{field}: {a:?} is not a multiaddr: {e}"))
            })
        })
        .collect()
}

fn parse_opt_duration(field: &str, text: &Option<String>) -> Result<Option<Duration>, ConfigError> {
    text.as_deref()
        .map(|t| parse_duration(t).map_err(|e| ConfigError::Invalid(format!("{field}: {e}"))))
        .transpose()
}

fn parse_opt_size(field: &str, text: &Option<String>) -> Result<Option<u64>, ConfigError> {
    text.as_deref()
        .map(|t| parse_size(t).map_err(|e| ConfigError::Invalid(format!("{field}: {e}"))))
        .transpose()
}

/// `PEERID`, `PEERID,PEERID` or `@FILE` (one PeerId a line, `#` comments).
pub fn parse_peer_list(text: &str) -> Result<Vec<PeerId>, ConfigError> {
    let owned;
    let (items, origin): (Vec<&str>, String) = match text.trim().strip_prefix('@') {
        Some(file) => {
            owned = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                path: PathBuf::from(file),
                source,
            })?;
            (
                owned
                    .lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .collect(),
                format!(" in {file}"),
            )
        }
        None => (text.split(',').map(str::trim).collect(), String::new()),
    };
    items
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<PeerId>()
                .map_err(|_| ConfigError::Invalid(format!("{s:?}{origin} is not a PeerId")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_means_what_it_says() {
        let text = include_str!("../../../dist/config.example.toml");
        let file = PolicyFile::parse(text).unwrap();
        let policy = file.policy().unwrap();
        assert_eq!(policy.windows.len(), 3);
        assert_eq!(policy.idle_after, Some(Duration::from_secs(10 * 60)));
        assert_eq!(file.caps.cores, Some(2));
        assert_eq!(file.max_input().unwrap(), Some(512 << 20));
        assert_eq!(file.accept_from().unwrap().map(|p| p.len()), Some(2));
        let wasm = file.wasm_caps().unwrap();
        assert!(wasm.enabled);
        assert_eq!(wasm.max_memory, 1 << 30);
        assert_eq!(wasm.timeout, Duration::from_secs(20 * 60));
        assert!(PolicyFile::parse("[kernels]\nwasm_timeout = \"soon\"\n")
            .unwrap()
            .wasm_caps()
            .is_err_and(|e| e.to_string().contains("kernels.wasm_timeout")));
        assert!(PolicyFile::parse("[kernels]\nwasm = false\n")
            .unwrap()
            .wasm_caps()
            .is_ok_and(|caps| !caps.enabled));
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(PolicyFile::parse("[lend]\nidle_minuts = 5\n").is_err());
        assert!(PolicyFile::parse("[lend]\nwindows = [\"noday\"]\n")
            .unwrap()
            .policy()
            .is_err());
        assert!(PolicyFile::parse("[caps]\nmemory = \"lots\"\n")
            .unwrap()
            .policy()
            .is_err());
        assert!(PolicyFile::parse("[access]\naccept_from = [\"nobody\"]\n")
            .unwrap()
            .accept_from()
            .is_err());
        let empty = PolicyFile::parse("").unwrap();
        assert_eq!(empty.policy().unwrap(), Policy::default());
        assert_eq!(empty.accept_from().unwrap(), None);
    }

    #[test]
    fn peer_files() {
        let a = PeerId::random();
        let b = PeerId::random();
        let file = std::env::temp_dir().join(format!("idlegrid-peers-{}", std::process::id()));
        std::fs::write(&file, format!("# office\n{a}\n\n{b} # printer room\n")).unwrap();
        let list = parse_peer_list(&format!("@{}", file.display())).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(list, vec![a, b]);
        assert_eq!(parse_peer_list(&format!("{a}, {b}")).unwrap(), vec![a, b]);
    }
}
