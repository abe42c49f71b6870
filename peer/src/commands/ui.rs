//! `idlegrid ui [--ui-listen ADDR]`: this machine's web page, without lending or
//! submitting: the peers it sees, and forms to start a change detection on two
//! uploaded images or a video encode of a folder of frames (from this machine only).
//! Runs until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::commands::common::{start_submitter, NetArgs};
use crate::ui::{hub_with_submitter, Page, UiConfig};

/// Arguments of `idlegrid ui`.
#[derive(clap::Args, Debug)]
pub struct UiCommandArgs {
    /// Serve the page on this address [default: 127.0.0.1:7878]; another than
    /// loopback opens it to the LAN (looking only: jobs start from this machine).
    #[arg(long, value_name = "ADDR")]
    pub ui_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(args: UiCommandArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(ui(args))
}

async fn ui(args: UiCommandArgs) -> anyhow::Result<()> {
    let (node, data_dir) = start_submitter(&args.net).await?;
    let node = Arc::new(node);
    let config = match args.ui_listen {
        Some(addr) => UiConfig {
            listen: addr,
            open: !addr.ip().is_loopback(),
        },
        None => UiConfig::default(),
    };
    let hub = hub_with_submitter(node.clone(), None, data_dir.join("ui"));
    let page = Page::start(config, hub).await?;
    println!("idlegrid page for {}: {}", node.peer_id(), page.url());
    println!("stop with Ctrl-C");
    crate::commands::serve::wait_for_stop().await;
    drop(page);
    Ok(())
}
