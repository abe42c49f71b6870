//! `idlegrid status`: what the owner's policy decides on this machine right now, and
//! why — plus the flags and config resolution `serve` shares with it.
//!
//! [`PolicyArgs`] are the owner's flags; [`Settings::resolve`] merges them over the
//! config file (flags win) into what `serve` applies: the [`Policy`], the caps, the
//! access lists and the network extras.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};

use crate::commands::common::{read_swarm_key, NetArgs};
use crate::policy::config::{self, parse_peer_list};
use crate::policy::{decide, Policy, PolicyFile, Sensors, WhenUnknown, Window};
use crate::units::{parse_duration, parse_size};

/// The owner's flags (`serve`, `status`); each overrides its config-file field.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// The owner's config file [default: $XDG_CONFIG_HOME/idlegrid/config.toml; see
    /// dist/config.example.toml].
    #[arg(long, env = "IDLEGRID_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Lend only within this window (repeatable), e.g. "mon-fri 19:00-07:00", "sat-sun".
    #[arg(long = "window", value_name = "WINDOW")]
    pub windows: Vec<String>,
    /// Lend only after this many minutes without keyboard or mouse input.
    #[arg(long, value_name = "MINUTES")]
    pub idle_minutes: Option<u64>,
    /// When idleness cannot be determined, assume "idle" or "busy".
    #[arg(long, value_enum)]
    pub when_unknown: Option<WhenUnknown>,
    /// Stop lending while other programs use more than this % of all CPUs.
    #[arg(long, value_name = "PERCENT")]
    pub max_other_load: Option<f64>,
    /// Take no chunks (and no new connections) above this much memory, e.g. 2GiB.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Blob store size cap, e.g. 4GiB.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Largest input fetched for a chunk, e.g. 512MiB.
    #[arg(long, value_name = "SIZE")]
    pub max_input: Option<String>,
    /// Running chunks may finish within this long after a stop (or SIGTERM), e.g. 2m.
    #[arg(long, value_parser = parse_duration)]
    pub grace: Option<Duration>,
    /// Accept jobs only from these submitters: PEERID,... or @FILE (repeatable).
    #[arg(long, value_name = "PEERS")]
    pub accept_from: Vec<String>,
    /// Refuse this peer and close its connections: PEERID,... or @FILE (repeatable).
    #[arg(long, value_name = "PEERS")]
    pub deny: Vec<String>,
    /// Established connections in total [default: 256].
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Established connections per peer [default: 8].
    #[arg(long)]
    pub max_connections_per_peer: Option<u32>,
    /// Run no users' WebAssembly programs for others (`[kernels] wasm = false`).
    #[arg(long)]
    pub no_wasm: bool,
    /// Most memory one run of a WebAssembly program may ask for, e.g. 1GiB.
    #[arg(long, value_name = "SIZE")]
    pub wasm_memory: Option<String>,
    /// Most fuel (about one per WebAssembly instruction) one run may ask for.
    #[arg(long, value_name = "N")]
    pub wasm_fuel: Option<u64>,
    /// Longest one run of a WebAssembly program may take here, e.g. 10m; past it the
    /// run stops with no result and its chunk goes to another peer.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub wasm_timeout: Option<std::time::Duration>,
}

/// Everything the owner decided, resolved from flags over the config file.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config_path: PathBuf,
    pub config_found: bool,
    pub policy: Policy,
    pub cores: Option<usize>,
    pub disk: Option<u64>,
    pub max_input: Option<u64>,
    pub accept_from: Option<Vec<PeerId>>,
    pub deny: Vec<PeerId>,
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
    pub max_connections: Option<u32>,
    pub max_connections_per_peer: Option<u32>,
    pub bootstrap: Vec<Multiaddr>,
    pub listen: Vec<Multiaddr>,
    pub relays: Vec<Multiaddr>,
    pub relay_server: bool,
    /// What users' WebAssembly programs may do here.
    pub wasm: crate::worker::WasmCaps,
}

fn peers_of(items: &[String]) -> anyhow::Result<Vec<PeerId>> {
    let mut peers = Vec::new();
    for item in items {
        peers.extend(parse_peer_list(item)?);
    }
    Ok(peers)
}

impl Settings {
    pub fn resolve(args: &PolicyArgs, net: &NetArgs) -> anyhow::Result<Settings> {
        let (config_path, required) = match &args.config {
            Some(path) => (path.clone(), true),
            None => (config::default_path(), false),
        };
        let file = PolicyFile::load(&config_path, required)?;
        let config_found = config_path.exists();
        let mut policy = file.policy()?;
        if !args.windows.is_empty() {
            policy.windows = args
                .windows
                .iter()
                .map(|w| w.parse::<Window>())
                .collect::<Result<_, _>>()?;
        }
        if let Some(m) = args.idle_minutes {
            policy.idle_after = Some(Duration::from_secs(m * 60));
        }
        if let Some(w) = args.when_unknown {
            policy.when_unknown = w;
        }
        if let Some(p) = args.max_other_load {
            anyhow::ensure!(
                p > 0.0 && p <= 100.0,
                "--max-other-load must be in (0, 100], not {p}"
            );
            policy.max_other_load = Some(p / 100.0);
        }
        let size = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<u64>> {
            v.as_deref()
                .map(|t| parse_size(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        if let Some(m) = size("--memory", &args.memory)? {
            policy.max_memory = Some(m);
        }
        if let Some(g) = args.grace {
            policy.grace = g;
        }
        let accept_from = if args.accept_from.is_empty() {
            file.accept_from()?
        } else {
            Some(peers_of(&args.accept_from)?)
        };
        let mut deny = file.deny()?;
        deny.extend(peers_of(&args.deny)?);
        let swarm_key = match (&net.swarm_key, &file.access.swarm_key) {
            (Some(key), _) => Some(*key),
            (None, Some(path)) => Some(
                read_swarm_key(&path.to_string_lossy())
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("access.swarm_key in {}", config_path.display()))?,
            ),
            (None, None) => None,
        };
        let mut wasm = file.wasm_caps()?;
        wasm.enabled &= !args.no_wasm;
        if let Some(m) = size("--wasm-memory", &args.wasm_memory)? {
            wasm.max_memory = m;
        }
        if let Some(f) = args.wasm_fuel {
            wasm.max_fuel = f;
        }
        if let Some(t) = args.wasm_timeout {
            wasm.timeout = t;
        }
        Ok(Settings {
            wasm,
            config_found,
            policy,
            cores: net.cores.or(file.caps.cores),
            disk: size("--disk", &args.disk)?.or(file.disk()?),
            max_input: size("--max-input", &args.max_input)?.or(file.max_input()?),
            accept_from,
            deny,
            swarm_key,
            max_connections: args.max_connections.or(file.access.max_connections),
            max_connections_per_peer: args
                .max_connections_per_peer
                .or(file.access.max_connections_per_peer),
            bootstrap: idlegrid_bootstrap::peers::merge(&[
                net.bootstrap_list(),
                file.bootstrap()?
                    .into_iter()
                    .map(|a| idlegrid_bootstrap::peers::check("the config file", a))
                    .collect::<Result<Vec<_>, _>>()?,
            ]),
            listen: file.listen()?,
            relays: idlegrid_bootstrap::peers::merge(&[
                net.relays.clone(),
                file.relays()?
                    .into_iter()
                    .map(|a| idlegrid_bootstrap::peers::check("the config file", a))
                    .collect::<Result<Vec<_>, _>>()?,
            ]),
            relay_server: file.network.relay_server.unwrap_or(false),
            config_path,
        })
    }

    /// Human lines describing the caps and access rules.
    pub fn describe(&self) -> Vec<String> {
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let mut lines = vec![format!(
            "config: {}{}",
            self.config_path.display(),
            if self.config_found {
                ""
            } else {
                " (not found: no rules from a file)"
            }
        )];
        lines.push(format!(
            "caps: cores {}, memory {}, blob store {}, largest input {}",
            self.cores.map_or("all".into(), |c| c.to_string()),
            self.policy.max_memory.map_or("no limit".into(), mib),
            self.disk.map_or("default (4096 MiB)".into(), mib),
            self.max_input.map_or("default (512 MiB)".into(), mib),
        ));
        lines.push(match &self.accept_from {
            None => "accepts jobs from: anyone who can connect".into(),
            Some(list) => format!("accepts jobs from: {} listed submitter(s)", list.len()),
        });
        lines.push(self.wasm.describe());
        if !self.deny.is_empty() {
            lines.push(format!("denied peers: {}", self.deny.len()));
        }
        lines.push(match &self.swarm_key {
            None => "pool: open (no swarm key)".into(),
            Some(key) => format!(
                "pool: private, swarm key fingerprint {}; TCP only (pnet does not work over QUIC)",
                key.fingerprint()
            ),
        });
        lines.push(format!(
            "across NATs: {}; relays for others: {}",
            if self.relays.is_empty() {
                "a slot on a known relay if autonat finds this peer unreachable".to_string()
            } else {
                format!("a slot on {} given relay(s)", self.relays.len())
            },
            if self.relay_server { "yes" } else { "no" }
        ));
        lines.push(format!(
            "grace period after a stop: {:?}; checked every {:?}",
            self.policy.grace, self.policy.check_every
        ));
        lines
    }
}

/// Arguments of `idlegrid status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args.policy, &args.net)?;
    let mut sensors = Sensors::system();
    // The CPU load is a difference of two samples: take the second one second later.
    sensors.observe();
    std::thread::sleep(Duration::from_secs(1));
    let seen = sensors.observe();
    let decision = decide(&settings.policy, &seen);
    println!("{}", decision.summary());
    for reason in &decision.stop_reasons {
        println!("  because {reason}");
    }
    for note in &decision.notes {
        println!("  {note}");
    }
    for line in settings.describe() {
        println!("{line}");
    }
    // The PeerIds others put in their allowlists: jobs are submitted from the
    // `submit` identity, work is served from the main one.
    let data_dir = args.net.data_dir();
    for (role, dir) in [
        ("serves as", data_dir.clone()),
        ("submits as", data_dir.join("submit")),
    ] {
        let key = idlegrid_bootstrap::load_or_create_identity(&dir)?;
        let running = match crate::datadir::holder(&dir) {
            Some(Some(pid)) => format!(", running now: pid {pid}"),
            Some(None) => ", running now".to_string(),
            None => String::new(),
        };
        println!(
            "this machine {role} {} ({}{running})",
            key.public().to_peer_id(),
            dir.display()
        );
    }
    Ok(())
}
