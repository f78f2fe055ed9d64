//! `zkstall floor` (hidden, for `cargo xtask bench`): attaches the floor, a program that
//! looks up one map and returns, to every hook `trace` and `agent` use on this kernel, and
//! holds it until SIGINT or SIGTERM. The bench runs its bystanders under it to show what
//! the hooks alone cost, beside what zkstall costs.

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::probes::{btf::Btf, floor::Floor, layout, tracefs::Tracefs};

pub async fn run() -> anyhow::Result<()> {
    if let Err(why) = super::privileges() {
        bail!("cannot attach the floor: {why}");
    }
    let tracefs = Tracefs::find_or_mount()?;
    let btf = Btf::from_sys_fs().ok();
    let layout = layout::build(&tracefs, btf.as_ref())?;
    drop(btf);
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let floor = Floor::attach(&layout)?;
    eprintln!(
        "floor attached: {} classic and {} BTF tracepoints; SIGINT or SIGTERM ends it",
        floor.hooks.0, floor.hooks.1
    );
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    drop(floor);
    Ok(())
}
