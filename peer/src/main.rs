//! `idlegrid`: the one binary every peer runs. A thin main: parse the command line,
//! set up logging, hand over to the command.

use clap::{Parser, Subcommand};

/// Turn the idle PCs of an office, a lab or a LAN into one compute grid.
#[derive(Parser)]
#[command(name = "idlegrid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: variant sizes do not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a real job on a generated sample through a few local peers (start here).
    Demo(idlegrid::commands::demo::DemoArgs),
    /// List the peers this machine can see.
    Peers(idlegrid::commands::peers::PeersArgs),
    /// Lend this machine's idle cores to the grid until stopped.
    Serve(idlegrid::commands::serve::ServeArgs),
    /// What the owner's policy decides on this machine now, and why.
    Status(idlegrid::commands::status::StatusArgs),
    /// Make keys: `keygen swarm-key FILE` for a private pool.
    Keygen(idlegrid::commands::keygen::KeygenArgs),
    /// Detect what changed between two images of the same scene (a black/white mask).
    Change(idlegrid::commands::change::ChangeArgs),
    /// Run a job of the real scheduler over thousands of virtual peers in virtual time.
    Simulate(idlegrid::commands::simulate::SimulateArgs),
    /// Encode a folder of frames into one H.264 MP4 (segments encoded on the grid).
    Video(idlegrid::commands::video::VideoArgs),
    /// Run your own WebAssembly program (WASI) on the grid: once per item, sandboxed.
    Run(Box<idlegrid::commands::run::RunArgs>),
    /// This machine's web page, without lending or submitting (jobs can start from it).
    Ui(idlegrid::commands::ui::UiCommandArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDLEGRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        // The web page's log tail keeps warnings whatever IDLEGRID_LOG shows.
        .with(
            idlegrid::ui::logtail::TailLayer
                .with_filter(tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error")),
        )
        .init();
    let result = match cli.command {
        Command::Demo(args) => idlegrid::commands::demo::run(args),
        Command::Peers(args) => idlegrid::commands::peers::run(args),
        Command::Serve(args) => idlegrid::commands::serve::run(args),
        Command::Status(args) => idlegrid::commands::status::run(args),
        Command::Keygen(args) => idlegrid::commands::keygen::run(args),
        Command::Change(args) => idlegrid::commands::change::run(args),
        Command::Simulate(args) => idlegrid::commands::simulate::run(args),
        Command::Video(args) => idlegrid::commands::video::run(args),
        Command::Run(args) => idlegrid::commands::run::run(*args),
        Command::Ui(args) => idlegrid::commands::ui::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // A command that kept its page up printed its error before waiting.
            if !err.is::<idlegrid::commands::job_page::Reported>() {
                eprintln!("error: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
