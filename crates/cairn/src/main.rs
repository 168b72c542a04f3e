//! `cairn`: runs a cairn storage node (`cairn start`) and talks to a running one over its REST API
//! (`upload`, `download`, `ls`, `rm`, `space`, `info`), including the durability layer's `swarm`
//! and `dataset` commands.

mod client;
mod commands;
mod config;
mod dataset_cmd;
mod durability_args;
mod durability_cli;
mod failure;
mod logging;
mod size;
mod start;
mod swarm_cmd;

use std::{ffi::OsString, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::{
    client::Client,
    commands::{DownloadArgs, UploadArgs},
    failure::{Failure, Outcome},
    start::StartArgs,
};

/// cairn: a p2p storage node compatible with Codex / Logos Storage.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
struct Cli {
    /// REST API of the node the client commands talk to
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CAIRN_API",
        default_value = client::DEFAULT_API
    )]
    api: String,
    /// Print machine-readable JSON (the node's JSON where it answers with some) and no progress
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground until Ctrl-C or SIGTERM; prints its peer id and REST API URL
    Start(Box<StartArgs>),
    /// Upload a file; prints its manifest CID
    Upload(UploadArgs),
    /// Download a dataset (fetching it from the network if needed) to a file or stdout
    Download(DownloadArgs),
    /// List the datasets stored on the node
    Ls,
    /// Delete a dataset (or a block) from the node
    Rm {
        /// The manifest (or block) CID
        #[arg(value_name = "CID")]
        cid: String,
    },
    /// Show the node's storage use and quota
    Space,
    /// Show the node's identity, addresses and version
    Info,
    /// Connect the node to a peer: a multiaddr ending in /p2p/<peer id>, or a bare peer id (its
    /// addresses are then looked up in the DHT)
    Connect {
        /// e.g. /ip4/192.0.2.1/tcp/8070/p2p/12D3KooW...
        #[arg(value_name = "ADDR")]
        addr: String,
    },
    /// List the peers the node is connected to
    Peers,
    /// Erasure-code a dataset stored on the node into K data and M parity rows; prints the
    /// protected manifest CID
    Protect(commands::ProtectArgs),
    /// Swarms of the durability layer: create, list, show, members, invite, join, revoke, leave
    /// (exit codes differ: see `cairn swarm --help`)
    Swarm {
        #[command(subcommand)]
        command: swarm_cmd::SwarmCommand,
    },
    /// Datasets a swarm keeps durable: add, list, health, verify, repair, retire (exit codes
    /// differ: see `cairn dataset --help`)
    Dataset {
        #[command(subcommand)]
        command: dataset_cmd::DatasetCommand,
    },
}

/// The full command, with the environment variable of every `start` setting in its help.
fn command() -> clap::Command {
    Cli::command()
        .after_help(failure::EXIT_CODES_HELP)
        .mut_subcommand("start", |start| {
            start
                .mut_args(config::with_env_note)
                .after_help(config::start_after_help())
        })
        .mut_subcommand("swarm", durability_cli::with_exit_codes_help)
        .mut_subcommand("dataset", durability_cli::with_exit_codes_help)
}

/// Parses the command line; clap's usage errors exit 64 (2 for `swarm` and `dataset`, as
/// durability.md §17 says), `--help` and `--version` exit 0.
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    parsed.map_err(|err| {
        // Printing help or an error to a closed stream is not worth a panic or another error.
        let _ = err.print();
        if err.use_stderr() && durability_cli::is_swarm_command_line(&args) {
            failure::SwarmCode::Usage.exit_code()
        } else if err.use_stderr() {
            ExitCode::from(failure::Code::Usage as u8)
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn run(cli: Cli) -> Outcome {
    let json = cli.json;
    if let Command::Start(args) = &cli.command {
        return start::run(args, json);
    }
    let client = Client::new(&cli.api)?;
    match &cli.command {
        Command::Start(_) => Ok(()),
        Command::Upload(args) => commands::upload(&client, args, json),
        Command::Download(args) => commands::download(&client, args, json),
        Command::Ls => commands::ls(&client, json),
        Command::Rm { cid } => commands::rm(&client, cid, json),
        Command::Space => commands::space(&client, json),
        Command::Info => commands::info(&client, json),
        Command::Connect { addr } => commands::connect(&client, addr, json),
        Command::Peers => commands::peers(&client, json),
        Command::Protect(args) => commands::protect(&client, args, json),
        // Run by `main` with their own exit codes.
        Command::Swarm { .. } | Command::Dataset { .. } => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match &cli.command {
        Command::Swarm { command } => {
            return durability_cli::run(&cli.api, cli.json, |client, json| {
                swarm_cmd::run(client, command, json)
            });
        }
        Command::Dataset { command } => {
            return durability_cli::run(&cli.api, cli.json, |client, json| {
                dataset_cmd::run(client, command, json)
            });
        }
        _ => {}
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> ExitCode {
    failure::eprint_line(&format!("error: {}", failure::render_chain(&failure.error)));
    failure.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn start_help_lists_env_vars() {
        let mut cmd = command();
        cmd.build();
        let start = cmd.find_subcommand_mut("start").unwrap();
        let help = start.render_help().to_string();
        for var in [
            "CAIRN_CONFIG",
            "CAIRN_DATA_DIR",
            "CAIRN_API_BINDADDR",
            "CAIRN_API_PORT",
            "CAIRN_STORAGE_QUOTA",
            "CAIRN_MAX_UPLOAD_SIZE",
            "CAIRN_API_CORS_ORIGIN",
            "CAIRN_LOG_LEVEL",
        ] {
            assert!(help.contains(var), "{var} missing from:\n{help}");
        }
        assert!(help.contains("$XDG_DATA_HOME/cairn"), "{help}");
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "cairn",
            "start",
            "--storage-quota",
            "20GiB",
            "--api-port",
            "0",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        assert_eq!(args.settings.storage_quota, Some(size::ByteSize(20 << 30)));
        assert_eq!(args.settings.api_port, Some(0));
        assert_eq!(args.settings.data_dir, None);

        let cli = Cli::try_parse_from(["cairn", "ls", "--api", "http://h:1", "--json"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.api, "http://h:1");
        assert!(Cli::try_parse_from(["cairn", "start", "--storage-quota", "lots"]).is_err());
    }
}
