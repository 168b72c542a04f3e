//! `cairn start`: runs a node in the foreground until Ctrl-C or SIGTERM.

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::{Context, anyhow};
use cairn_node::Node;

use crate::{
    config::{self, Settings},
    failure::{Failure, Outcome},
    logging,
};

/// How long a clean shutdown may take before the process gives up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `cairn start`.
#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML file with node settings (keys as the flags without the leading --)
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// Runs `cairn start`.
pub(crate) fn run(args: &StartArgs, json: bool) -> Outcome {
    let mut config = config::resolve(&args.settings, args.config.as_deref(), &|name: &str| {
        std::env::var_os(name)
    })?;
    logging::parse_filter(&config.log_level).map_err(Failure::usage)?;
    let control = logging::init(&config.log_level)?;
    config.log_control = Some(control);

    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, json))
}

/// Makes glibc's allocator use one arena for every thread, before the runtime starts its threads.
///
/// By default glibc gives threads that contend on malloc arenas of their own (up to 8 per core),
/// and each arena keeps the memory freed into it. A node moves block buffers between many
/// threads (network tasks, the blocking pool that verifies and stores), so its peak RSS grew with
/// the thread count: in the loopback transfer benchmark a downloading node peaked at 65–76 MiB
/// with the default and at 58 MiB with one arena, at the same speed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before the runtime's
    // threads exist, and M_ARENA_MAX takes any positive count.
    let applied = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if applied != 1 {
        tracing::debug!("glibc did not accept M_ARENA_MAX");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn serve(config: cairn_node::NodeConfig, json: bool) -> Outcome {
    // Signal handlers are installed before the node starts, so an early SIGTERM is not fatal.
    let mut signals = Signals::new()?;
    let data_dir = config.data_dir.clone();
    tracing::info!(?config, "starting the node");

    let mut node = tokio::select! {
        node = Node::start(config) => node.context("cannot start the node")?,
        signal = signals.recv() => {
            tracing::info!("{signal} received while starting; exiting");
            return Ok(());
        }
    };
    announce(&node, &data_dir, json)?;

    let signal = tokio::select! {
        signal = signals.recv() => signal,
        () = node.stopped() => {
            // Not calling shutdown: the node's server task is already finished.
            return Err(anyhow!("the node stopped unexpectedly").into());
        }
    };
    tracing::info!("{signal} received; shutting down (send it again to exit at once)");
    let shutdown = node.shutdown();
    tokio::select! {
        () = shutdown => {
            tracing::info!("node stopped");
            Ok(())
        }
        signal = signals.recv() => {
            Err(anyhow!("{signal} received again; exited before the shutdown finished").into())
        }
        () = tokio::time::sleep(SHUTDOWN_TIMEOUT) => Err(anyhow!(
            "the node did not shut down within {} s",
            SHUTDOWN_TIMEOUT.as_secs()
        )
        .into()),
    }
}

/// Prints where the node is, on stdout: scripts and tests read these lines.
fn announce(node: &Node, data_dir: &std::path::Path, json: bool) -> Outcome {
    let api_url = format!("http://{}{}", node.api_addr(), crate::client::API_BASE);
    let mut out = std::io::stdout().lock();
    let written = if json {
        let line = serde_json::json!({
            "peerId": node.peer_id(),
            "api": api_url,
            "dataDir": data_dir,
        });
        writeln!(out, "{line}")
    } else {
        writeln!(out, "peer id: {}", node.peer_id())
            .and_then(|()| writeln!(out, "REST API: {api_url}"))
            .and_then(|()| writeln!(out, "data dir: {}", data_dir.display()))
    };
    written
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    Ok(())
}

/// Ctrl-C and (on Unix) SIGTERM.
#[derive(Debug)]
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> Outcome<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> Outcome<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}
