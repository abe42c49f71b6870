//! `idlegrid simulate`: runs one job of the real scheduler over thousands of virtual
//! peers in virtual time and prints how close it came to the ideal (see
//! [`idlegrid_scheduler::sim`]). With `--json` the last line is one JSON object for scripts.

use idlegrid_scheduler::sim::{self, SimConfig};
use idlegrid_scheduler::{SchedulerConfig, Trust};

use crate::commands::common::TrustArg;

/// Arguments of `idlegrid simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Virtual peers, this peer's own worker included.
    #[arg(long, default_value_t = 1000)]
    pub peers: u32,
    /// Chunks in the job.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: u32,
    /// Seed of everything random: speeds, links, deaths, lies.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Fraction of remote peers that die mid-job (half noticed, half silent).
    #[arg(long, default_value_t = 0.0)]
    pub fail: f64,
    /// Fraction of remote peers that return wrong results.
    #[arg(long, default_value_t = 0.0)]
    pub byzantine: f64,
    /// Fraction of a liar's answers that are wrong.
    #[arg(long, default_value_t = 0.5)]
    pub lie_rate: f64,
    /// Fraction of remote peers new to the submitter (no record of verified results);
    /// the others earned trust in earlier jobs, so a liar among them is one that turned.
    #[arg(long, default_value_t = 0.0)]
    pub new_peers: f64,
    /// Liars come in groups of this many keys on one host, agreeing on their lies.
    #[arg(long, default_value_t = 1)]
    pub sybil: u32,
    /// `earned` (results believed only from peers with a record, audited) or `all`.
    #[arg(long, value_enum, default_value_t = TrustArg::Earned)]
    pub trust: TrustArg,
    /// Fastest peer / slowest peer.
    #[arg(long, default_value_t = 10.0)]
    pub speed_spread: f64,
    /// Agreeing hosts needed per chunk.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Fraction of chunks the local worker recomputes.
    #[arg(long, default_value_t = 0.0)]
    pub spot_check: f64,
    /// Print one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = SimConfig {
        peers: args.peers,
        chunks: args.chunks,
        seed: args.seed,
        fail: args.fail,
        byzantine: args.byzantine,
        lie_rate: args.lie_rate,
        new_peers: args.new_peers,
        sybil: args.sybil,
        speed_spread: args.speed_spread,
        replicas: args.replicas,
        spot_check: args.spot_check,
        scheduler: SchedulerConfig {
            trust: match args.trust {
                TrustArg::Earned => Trust::default(),
                TrustArg::All => Trust::All,
            },
            ..SchedulerConfig::default()
        },
    };
    let report = sim::run(&config)?;
    println!("{report}");
    if args.json {
        println!("{}", report.to_json());
    }
    if report.completed {
        Ok(())
    } else {
        anyhow::bail!(
            "the simulated job did not complete: {}",
            report.failure.as_deref().unwrap_or("unknown")
        )
    }
}
