//! Settings of `cairn start`, merged from four layers: flags > `CAIRN_*` environment variables >
//! TOML file (`--config`) > defaults.
//!
//! One struct, [`Settings`], describes every setting once: its field name is the kebab-case key
//! of [`NodeConfig`] (and of the TOML file), the flag is `--<key>` and the environment variable
//! `CAIRN_<KEY>` (upper case, `-` → `_`). The environment layer is parsed by the same clap
//! parsers as the flags, and the merge goes through serde, so adding a node setting means adding
//! one field here.

use std::{
    ffi::OsString,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow, bail};
use cairn_node::NodeConfig;
use clap::{ArgAction, Args, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::{
    failure::{Failure, Outcome},
    size::ByteSize,
};

/// Reads one environment variable; the real process environment in `main`, a map in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Prefix of every environment variable cairn reads.
const ENV_PREFIX: &str = "CAIRN_";

/// Where the default data directory goes, as shown by `--help`.
const DATA_DIR_DEFAULT_HELP: &str =
    "$XDG_DATA_HOME/cairn, else $HOME/.local/share/cairn, else ./cairn-data";

/// The node settings one layer provides; `None` means "not set by this layer".
///
/// Field names must be [`NodeConfig`]'s (checked when merging: `NodeConfig` denies unknown
/// fields). Sizes accept plain bytes and units (`20GiB`, `500MB`).
#[derive(Debug, Default, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Settings {
    /// Directory for the store and the node key [default: $XDG_DATA_HOME/cairn, else
    /// $HOME/.local/share/cairn, else ./cairn-data]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// REST API listen address [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub(crate) api_bindaddr: Option<IpAddr>,
    /// REST API port; 0 lets the OS choose (the bound address is printed) [default: 8080]
    #[arg(long, value_name = "PORT")]
    pub(crate) api_port: Option<u16>,
    /// Storage quota: bytes, or a size like 20GiB or 500MB [default: 20GiB]
    #[arg(long, value_name = "SIZE")]
    pub(crate) storage_quota: Option<ByteSize>,
    /// Largest accepted upload: bytes, or a size like 1GiB [default: unlimited]
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_upload_size: Option<ByteSize>,
    /// Send CORS headers allowing this origin (e.g. http://localhost:3000) [default: none]
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) api_cors_origin: Option<String>,
    /// IP the p2p layer listens on (TCP) [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub(crate) listen_ip: Option<IpAddr>,
    /// TCP port of the p2p layer; 0 lets the OS choose [default: 0]
    #[arg(long, value_name = "PORT")]
    pub(crate) listen_port: Option<u16>,
    /// Bootstrap peer, a multiaddr ending in /p2p/<peer id>; repeat the flag (or separate with
    /// commas) for several
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub(crate) bootstrap_node: Option<Vec<String>>,
    /// Address to announce to peers (e.g. /ip4/203.0.113.7/tcp/8070); repeatable
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub(crate) announce_addr: Option<Vec<String>>,
    /// Maximum connected peers [default: 160]
    #[arg(long, value_name = "N")]
    pub(crate) max_peers: Option<u32>,
    /// Seconds between re-provides of every advertised dataset on the DHT [default: 600]
    #[arg(long, value_name = "SECONDS")]
    pub(crate) reprovide_interval: Option<u64>,
    /// Seconds a DHT provider lookup may take [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub(crate) lookup_timeout: Option<u64>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// info,cairn_store=debug [default: info]
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
    /// The `[durability]` table (file only): durability.md §14 timer overrides.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) durability: Option<cairn_node::DurabilityConfig>,
}

/// The environment variable for a flag: `data-dir` → `CAIRN_DATA_DIR`.
pub(crate) fn env_var_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// Appends ` [env: CAIRN_…]` to the help of a flag, so `--help` lists the variable names this
/// module actually reads.
pub(crate) fn with_env_note(arg: clap::Arg) -> clap::Arg {
    let is_builtin = matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    );
    let Some(long) = arg.get_long().filter(|_| !is_builtin) else {
        return arg;
    };
    let note = format!("[env: {}]", env_var_name(long));
    let help = match arg.get_help() {
        Some(help) => format!("{help} {note}"),
        None => note,
    };
    arg.help(help)
}

/// clap's parser for [`Settings`] alone, used to read the environment layer.
fn settings_command() -> clap::Command {
    Settings::augment_args(
        clap::Command::new("cairn-env")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true),
    )
}

/// The reason inside a clap error, without its usage banner.
pub(crate) fn clap_reason(err: &clap::Error) -> String {
    match std::error::Error::source(err) {
        Some(source) => source.to_string(),
        None => err.kind().as_str().unwrap_or("invalid value").to_owned(),
    }
}

/// The environment layer: `CAIRN_<KEY>` for every setting. Empty variables count as unset.
pub(crate) fn settings_from_env(env: Env<'_>) -> Outcome<Settings> {
    let command = settings_command();
    let mut args = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        let var = env_var_name(long);
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(&value);
        // Parsed alone first so that an error names the variable.
        if let Err(err) = command.clone().try_get_matches_from([&flag]) {
            return Err(Failure::usage(anyhow!(
                "environment variable {var}={value:?}: {}",
                clap_reason(&err)
            )));
        }
        args.push(flag);
    }
    let matches = command
        .try_get_matches_from(args)
        .map_err(|err| Failure::usage(anyhow!("environment variables: {}", clap_reason(&err))))?;
    Settings::from_arg_matches(&matches)
        .map_err(|err| Failure::usage(anyhow!("environment variables: {}", clap_reason(&err))))
}

/// The file layer: a TOML file with [`NodeConfig`]'s keys. Unknown keys are errors.
pub(crate) fn settings_from_file(path: &Path) -> Outcome<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))
        .map_err(Failure::usage)?;
    toml::from_str(&text)
        .with_context(|| format!("config file {}", path.display()))
        .map_err(Failure::usage)
}

/// The default data directory: `$XDG_DATA_HOME/cairn`, else `$HOME/.local/share/cairn`, else
/// `./cairn-data`. Relative or empty variables, and `HOME=/` (service accounts), are ignored.
pub(crate) fn default_data_dir(env: Env<'_>) -> PathBuf {
    let absolute = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.parent().is_some())
    };
    if let Some(xdg) = absolute("XDG_DATA_HOME") {
        return xdg.join("cairn");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local").join("share").join("cairn");
    }
    PathBuf::from("cairn-data")
}

/// Overlays `layers` (lowest precedence first) onto `defaults`. A layer's unset (`None`) settings
/// leave the value below unchanged.
pub(crate) fn merge(defaults: &NodeConfig, layers: &[&Settings]) -> anyhow::Result<NodeConfig> {
    let mut merged = serde_json::to_value(defaults).context("encoding the default settings")?;
    let serde_json::Value::Object(target) = &mut merged else {
        bail!("the default settings are not a map");
    };
    for layer in layers {
        let serde_json::Value::Object(values) =
            serde_json::to_value(layer).context("encoding the settings")?
        else {
            bail!("the settings are not a map");
        };
        target.extend(values.into_iter().filter(|(_, v)| !v.is_null()));
    }
    serde_json::from_value(merged).context("invalid settings")
}

/// Resolves the node configuration: `flags` > environment > config file (`--config`, else
/// `CAIRN_CONFIG`) > defaults. `log_control` is left unset.
pub(crate) fn resolve(
    flags: &Settings,
    config_file: Option<&Path>,
    env: Env<'_>,
) -> Outcome<NodeConfig> {
    let from_env = settings_from_env(env)?;
    let config_file = config_file.map(Path::to_path_buf).or_else(|| {
        env(&env_var_name("config"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let from_file = match &config_file {
        Some(path) => settings_from_file(path)?,
        None => Settings::default(),
    };
    let defaults = NodeConfig {
        data_dir: default_data_dir(env),
        ..NodeConfig::default()
    };
    merge(&defaults, &[&from_file, &from_env, flags]).map_err(Failure::usage)
}

/// Help text fragment used by `cairn start --help`.
pub(crate) fn start_after_help() -> String {
    format!(
        "Settings come from, in order of precedence: flags, CAIRN_* environment variables \
         (empty ones are ignored), the TOML file given by --config (keys are the flag names \
         without the leading --, e.g. data-dir = \"/srv/cairn\" or storage-quota = \"20GiB\"), \
         and the defaults.\n\nDefault data directory: {DATA_DIR_DEFAULT_HELP}.\nSizes: {}.",
        crate::size::SIZE_FORMS
    )
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, io::Write as _, net::Ipv4Addr};

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect()
    }

    fn resolve_with(
        flags: &Settings,
        file: Option<&Path>,
        env: &HashMap<String, OsString>,
    ) -> Outcome<NodeConfig> {
        resolve(flags, file, &|k: &str| env.get(k).cloned())
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn durability_table_passes_through() {
        let file = config_file(
            "api-port = 1111\n[durability]\nbeacon_interval = \"10s\"\nlost_after = \"1h\"\n\
             download_cap = 1000\nsome_future_key = \"x\"\n",
        );
        let env = env_of(&[("HOME", "/home/ann")]);
        let config = resolve_with(&Settings::default(), Some(file.path()), &env).unwrap();
        assert_eq!(config.api_port, 1111);
        let d = &config.durability;
        assert_eq!(d.beacon_interval.unwrap().secs(), 10);
        assert_eq!(d.lost_after.unwrap().secs(), 3600);
        assert_eq!(d.download_cap, Some(1000));
        assert!(d.other.contains_key("some_future_key"));
        let bad = config_file("[durability]\nlost_after = \"soon\"\n");
        assert!(resolve_with(&Settings::default(), Some(bad.path()), &env).is_err());
    }

    #[test]
    fn env_names() {
        assert_eq!(env_var_name("data-dir"), "CAIRN_DATA_DIR");
        assert_eq!(env_var_name("api-port"), "CAIRN_API_PORT");
        assert_eq!(env_var_name("config"), "CAIRN_CONFIG");
    }

    #[test]
    fn defaults_without_any_layer() {
        let env = env_of(&[("HOME", "/home/ann")]);
        let config = resolve_with(&Settings::default(), None, &env).unwrap();
        let defaults = NodeConfig::default();
        assert_eq!(
            config.data_dir,
            PathBuf::from("/home/ann/.local/share/cairn")
        );
        assert_eq!(config.api_bindaddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.api_port, 8080);
        assert_eq!(config.storage_quota, defaults.storage_quota);
        assert_eq!(config.storage_quota, 20 << 30);
        assert_eq!(config.max_upload_size, None);
        assert_eq!(config.api_cors_origin, None);
        assert_eq!(config.log_level, "info");
        assert!(config.log_control.is_none());
    }

    #[test]
    fn default_data_dir_fallbacks() {
        let dir = |pairs: &[(&str, &str)]| {
            let env = env_of(pairs);
            default_data_dir(&|k: &str| env.get(k).cloned())
        };
        assert_eq!(
            dir(&[("XDG_DATA_HOME", "/x/data"), ("HOME", "/home/ann")]),
            PathBuf::from("/x/data/cairn")
        );
        assert_eq!(
            dir(&[("XDG_DATA_HOME", "relative"), ("HOME", "/home/ann")]),
            PathBuf::from("/home/ann/.local/share/cairn")
        );
        assert_eq!(
            dir(&[("XDG_DATA_HOME", ""), ("HOME", "/home/ann")]),
            PathBuf::from("/home/ann/.local/share/cairn")
        );
        assert_eq!(dir(&[]), PathBuf::from("cairn-data"));
        assert_eq!(dir(&[("HOME", "")]), PathBuf::from("cairn-data"));
        assert_eq!(dir(&[("HOME", "/")]), PathBuf::from("cairn-data"));
    }

    #[test]
    fn precedence_flags_over_env_over_file_over_defaults() {
        let file = config_file(
            "data-dir = \"/from/file\"\napi-port = 1111\napi-bindaddr = \"0.0.0.0\"\n\
             storage-quota = \"1GiB\"\nmax-upload-size = 4096\nlog-level = \"warn\"\n",
        );
        let env = env_of(&[
            ("HOME", "/home/ann"),
            ("CAIRN_API_PORT", "2222"),
            ("CAIRN_STORAGE_QUOTA", "500MB"),
            ("CAIRN_LOG_LEVEL", "debug"),
            ("CAIRN_API_CORS_ORIGIN", "http://env.example"),
        ]);
        let flags = Settings {
            api_port: Some(3333),
            log_level: Some("trace".into()),
            ..Settings::default()
        };
        let config = resolve_with(&flags, Some(file.path()), &env).unwrap();
        // flag beats env and file
        assert_eq!(config.api_port, 3333);
        assert_eq!(config.log_level, "trace");
        // env beats file
        assert_eq!(config.storage_quota, 500_000_000);
        assert_eq!(
            config.api_cors_origin.as_deref(),
            Some("http://env.example")
        );
        // file beats defaults
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.api_bindaddr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(config.max_upload_size, Some(4096));
    }

    #[test]
    fn config_file_from_env_and_flag_wins() {
        let from_env = config_file("api-port = 1111\n");
        let from_flag = config_file("api-port = 2222\n");
        let env = env_of(&[("CAIRN_CONFIG", from_env.path().to_str().unwrap())]);
        let config = resolve_with(&Settings::default(), None, &env).unwrap();
        assert_eq!(config.api_port, 1111);
        let config = resolve_with(&Settings::default(), Some(from_flag.path()), &env).unwrap();
        assert_eq!(config.api_port, 2222);
    }

    #[test]
    fn every_setting_reads_from_env() {
        let env = env_of(&[
            ("CAIRN_DATA_DIR", "/env/dir"),
            ("CAIRN_API_BINDADDR", "::1"),
            ("CAIRN_API_PORT", "0"),
            ("CAIRN_STORAGE_QUOTA", "20GiB"),
            ("CAIRN_MAX_UPLOAD_SIZE", "1048576"),
            ("CAIRN_API_CORS_ORIGIN", "*"),
            ("CAIRN_LOG_LEVEL", "info,cairn_store=debug"),
            ("CAIRN_LISTEN_IP", "127.0.0.1"),
            ("CAIRN_LISTEN_PORT", "8070"),
            (
                "CAIRN_BOOTSTRAP_NODE",
                "/ip4/10.0.0.1/tcp/1/p2p/a,/ip4/10.0.0.2/tcp/2/p2p/b",
            ),
            ("CAIRN_ANNOUNCE_ADDR", "/ip4/203.0.113.7/tcp/8070"),
            ("CAIRN_MAX_PEERS", "50"),
            ("CAIRN_REPROVIDE_INTERVAL", "300"),
            ("CAIRN_LOOKUP_TIMEOUT", "10"),
        ]);
        let settings = settings_from_env(&|k: &str| env.get(k).cloned()).unwrap();
        assert_eq!(
            settings,
            Settings {
                data_dir: Some("/env/dir".into()),
                api_bindaddr: Some("::1".parse().unwrap()),
                api_port: Some(0),
                storage_quota: Some(ByteSize(20 << 30)),
                max_upload_size: Some(ByteSize(1 << 20)),
                api_cors_origin: Some("*".into()),
                log_level: Some("info,cairn_store=debug".into()),
                listen_ip: Some("127.0.0.1".parse().unwrap()),
                listen_port: Some(8070),
                bootstrap_node: Some(vec![
                    "/ip4/10.0.0.1/tcp/1/p2p/a".into(),
                    "/ip4/10.0.0.2/tcp/2/p2p/b".into()
                ]),
                announce_addr: Some(vec!["/ip4/203.0.113.7/tcp/8070".into()]),
                max_peers: Some(50),
                reprovide_interval: Some(300),
                lookup_timeout: Some(10),
                durability: None,
            }
        );
        // Every field of Settings is a NodeConfig key (NodeConfig denies unknown fields).
        merge(&NodeConfig::default(), &[&settings]).unwrap();
    }

    #[test]
    fn empty_env_values_are_unset_and_values_may_start_with_a_dash() {
        let env = env_of(&[("CAIRN_API_PORT", ""), ("CAIRN_DATA_DIR", "-odd")]);
        let settings = settings_from_env(&|k: &str| env.get(k).cloned()).unwrap();
        assert_eq!(settings.api_port, None);
        assert_eq!(settings.data_dir, Some(PathBuf::from("-odd")));
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = env_of(&[("CAIRN_API_PORT", "eighty")]);
        let err = settings_from_env(&|k: &str| env.get(k).cloned()).unwrap_err();
        assert_eq!(err.code, crate::failure::Code::Usage);
        let msg = format!("{:#}", err.error);
        assert!(
            msg.contains("CAIRN_API_PORT") && msg.contains("eighty"),
            "{msg}"
        );

        let env = env_of(&[("CAIRN_STORAGE_QUOTA", "lots")]);
        let err = settings_from_env(&|k: &str| env.get(k).cloned()).unwrap_err();
        let msg = format!("{:#}", err.error);
        assert!(
            msg.contains("CAIRN_STORAGE_QUOTA") && msg.contains("invalid size"),
            "{msg}"
        );
    }

    #[test]
    fn bad_config_files_are_usage_errors() {
        let unknown = config_file("data-dri = \"/x\"\n");
        let err =
            resolve_with(&Settings::default(), Some(unknown.path()), &env_of(&[])).unwrap_err();
        assert_eq!(err.code, crate::failure::Code::Usage);
        assert!(format!("{:#}", err.error).contains("data-dri"));

        let wrong_type = config_file("api-port = \"eighty\"\n");
        assert!(resolve_with(&Settings::default(), Some(wrong_type.path()), &env_of(&[])).is_err());

        let missing = Path::new("/nonexistent/cairn.toml");
        let err = resolve_with(&Settings::default(), Some(missing), &env_of(&[])).unwrap_err();
        assert_eq!(err.code, crate::failure::Code::Usage);
        assert!(format!("{:#}", err.error).contains("cannot read config file"));
    }

    #[test]
    fn file_sizes_accept_integers_and_units() {
        let file = config_file("storage-quota = 1000\nmax-upload-size = \"2 MiB\"\n");
        let config = resolve_with(&Settings::default(), Some(file.path()), &env_of(&[])).unwrap();
        assert_eq!(config.storage_quota, 1000);
        assert_eq!(config.max_upload_size, Some(2 << 20));
    }

    #[test]
    fn env_note_is_added_to_help() {
        let arg = with_env_note(clap::Arg::new("data_dir").long("data-dir").help("Where"));
        assert_eq!(
            arg.get_help().map(ToString::to_string).as_deref(),
            Some("Where [env: CAIRN_DATA_DIR]")
        );
    }
}
