//! The process's tracing subscriber: an `EnvFilter` behind a reload layer, so the node can change
//! the filter at run time (`POST /debug/chronicles/loglevel`). Logs go to stderr; stdout carries
//! the lines scripts read (peer id, API address).

use std::{io::IsTerminal as _, sync::Arc};

use anyhow::anyhow;
use cairn_node::LogControl;
use tracing_subscriber::{EnvFilter, Registry, layer::SubscriberExt as _, reload};

/// Changes the filter of the subscriber installed by [`init`].
pub(crate) struct ReloadLogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl std::fmt::Debug for ReloadLogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadLogControl").finish_non_exhaustive()
    }
}

impl LogControl for ReloadLogControl {
    fn set_filter(&self, directive: &str) -> Result<(), String> {
        let filter = parse_filter(directive).map_err(|e| format!("{e:#}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }
}

/// Parses a tracing filter (`info`, `warn,cairn_store=debug`, …).
pub(crate) fn parse_filter(directive: &str) -> anyhow::Result<EnvFilter> {
    // The parse error's Display already includes its source: no chain, to avoid repeating it.
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| anyhow!("invalid log filter {directive:?}: {e}"))
}

/// Installs the global subscriber with `directive` as its initial filter.
pub(crate) fn init(directive: &str) -> anyhow::Result<Arc<ReloadLogControl>> {
    let filter = parse_filter(directive)?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let subscriber = tracing_subscriber::registry().with(filter).with(fmt);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(Arc::new(ReloadLogControl { handle }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        for ok in [
            "info",
            "TRACE",
            "warn,cairn_store=debug",
            "cairn_node::api=trace",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["info,cairn=loud", "=debug["] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reload_changes_the_filter() {
        // A local (not global) subscriber, so tests stay independent.
        let (layer, handle) = reload::Layer::new(parse_filter("info").unwrap());
        let subscriber = tracing_subscriber::registry().with(layer);
        let control = ReloadLogControl { handle };
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            control.set_filter("debug").unwrap();
            assert!(tracing::enabled!(tracing::Level::DEBUG));
            assert!(control.set_filter("info,x=nonsense").is_err());
            assert!(tracing::enabled!(tracing::Level::DEBUG));
        });
    }
}
