//! What the `swarm` and `dataset` commands (durability.md §17) share: running one with the exit
//! codes of §17, reporting the node's JSON errors as `code: message`, and printing.

use std::{
    ffi::OsString,
    io::{self, IsTerminal as _, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::{
    client::{Client, NodeAnswer},
    failure::{Failure, Outcome, SwarmCode, eprint_line, render_chain},
    size::format_size,
};

/// Runs one `swarm` / `dataset` command against the node at `api` and maps its outcome to the
/// exit codes of §17.
pub(crate) fn run(
    api: &str,
    json: bool,
    command: impl FnOnce(&Client, bool) -> Outcome<SwarmCode>,
) -> ExitCode {
    match Client::new(api).and_then(|client| command(&client, json)) {
        Ok(code) => code.exit_code(),
        Err(failure) => report(&failure, json),
    }
}

/// Prints a failure on stderr, as `error: code: message` when the node answered with a §17 JSON
/// error (also printed as is on stdout with `--json`).
fn report(failure: &Failure, json: bool) -> ExitCode {
    let answer = failure
        .error
        .chain()
        .find_map(|e| e.downcast_ref::<NodeAnswer>());
    match answer.and_then(|a| Some((a, a.api_error()?))) {
        Some((answer, (code, message))) => {
            if json && let Some(body) = answer.body_json() {
                // The error line below matters more than a stdout write failure.
                let _ = print_json(&body);
            }
            eprint_line(&format!("error: {code}: {message}"));
        }
        None => eprint_line(&format!("error: {}", render_chain(&failure.error))),
    }
    failure.swarm_code().exit_code()
}

/// Whether the command line names the `swarm` or `dataset` command, so that clap's usage
/// errors for them exit 2 (§17) rather than 64. The first word that is not an option (or the
/// value of `--api`) is the command.
pub(crate) fn is_swarm_command_line(args: &[OsString]) -> bool {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--api" {
            words.next();
        } else if !word.starts_with('-') {
            return word == "swarm" || word == "dataset";
        }
    }
    false
}

/// Adds the §17 exit codes to the help of `swarm` / `dataset` and of each of their commands.
pub(crate) fn with_exit_codes_help(command: clap::Command) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let help = crate::failure::SWARM_EXIT_CODES_HELP;
    names
        .iter()
        .fold(command.after_help(help), |command, name| {
            command.mut_subcommand(name, |c| c.after_help(help))
        })
}

/// Prints JSON (pretty, one document) on stdout.
pub(crate) fn print_json(value: &Value) -> Outcome {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    print_stdout(&text)
}

/// Writes text and a newline to stdout; a closed pipe ends the output quietly.
pub(crate) fn print_stdout(text: &str) -> Outcome {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout").into())
        }
        _ => Ok(()),
    }
}

/// With `--json`, prints `value` as is; otherwise prints `human(value)`. Returns `Ok` (exit 0).
pub(crate) fn answer(
    json: bool,
    value: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Outcome<SwarmCode> {
    if json {
        print_json(value)?;
    } else {
        print_stdout(&human(value))?;
    }
    Ok(SwarmCode::Ok)
}

/// An upload progress bar on stderr, hidden with `--json` or when stderr is not a terminal.
pub(crate) fn upload_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message("uploading");
    bar
}

/// Left-aligned columns separated by two spaces, trailing spaces trimmed.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut widths = vec![0usize; header.len()];
    for row in std::iter::once(&header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// `name value` lines with the values aligned; `None` values are left out.
pub(crate) fn fields(pairs: &[(&str, Option<String>)]) -> String {
    let width = pairs
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .filter_map(|(name, value)| {
            value
                .as_ref()
                .map(|value| format!("{name:<width$}  {value}").trim_end().to_owned())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as a table cell: strings bare, numbers and booleans as written, null as `-`,
/// anything else as compact JSON.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A string or number field, if present.
pub(crate) fn opt(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        other => Some(cell(other)),
    }
}

/// A byte count field as `1.50 GiB`, or the raw value if it is not a number.
pub(crate) fn bytes_cell(value: &Value) -> String {
    value.as_u64().map_or_else(|| cell(value), format_size)
}

/// A list of slot indices (or anything) as `4, 11, 17`; an empty list is `none`.
pub(crate) fn list_cell(value: &Value) -> String {
    match value.as_array() {
        Some(items) if items.is_empty() => "none".to_owned(),
        Some(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        None => cell(value),
    }
}

/// A dataset policy as people read it: `erasure 10+10 (repair at 3 missing)`, `replicate 3`,
/// `none`, `auto`. Accepts the response form `{kind, k, m, replicas, repairAtMissing}` and the
/// request forms `"auto"`, `{"replicate":R}`, `{"erasure":{"k":K,"m":M}}`.
pub(crate) fn policy_text(policy: &Value) -> String {
    if let Some(text) = policy.as_str() {
        return text.to_owned();
    }
    if let Some(r) = policy.get("replicate") {
        return format!("replicate {}", cell(r));
    }
    if let Some(e) = policy.get("erasure") {
        return format!("erasure {}+{}", cell(&e["k"]), cell(&e["m"]));
    }
    let mut text = match policy["kind"].as_str() {
        Some("erasure") => format!("erasure {}+{}", cell(&policy["k"]), cell(&policy["m"])),
        Some("replicate") => format!("replicate {}", cell(&policy["replicas"])),
        Some(kind) => kind.to_owned(),
        None => return cell(policy),
    };
    if let Some(l0) = policy["repairAtMissing"].as_u64().filter(|l0| *l0 > 0) {
        text.push_str(&format!(" (repair at {l0} missing)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn command_line_detection() {
        let args = |words: &[&str]| -> Vec<OsString> {
            std::iter::once("cairn")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect()
        };
        assert!(is_swarm_command_line(&args(&["swarm", "list"])));
        assert!(is_swarm_command_line(&args(&["dataset", "--bogus"])));
        assert!(is_swarm_command_line(&args(&[
            "--json", "--api", "h:1", "swarm"
        ])));
        assert!(is_swarm_command_line(&args(&["--api=h:1", "dataset"])));
        assert!(!is_swarm_command_line(&args(&["--api", "swarm", "ls"])));
        assert!(!is_swarm_command_line(&args(&["upload", "swarm"])));
        assert!(!is_swarm_command_line(&args(&["--json"])));
        assert!(!is_swarm_command_line(&args(&[])));
    }

    #[test]
    fn policies_for_people() {
        assert_eq!(
            policy_text(&json!({"kind":"erasure","k":10,"m":10,"replicas":0,"repairAtMissing":3})),
            "erasure 10+10 (repair at 3 missing)"
        );
        assert_eq!(
            policy_text(&json!({"kind":"replicate","k":1,"m":2,"replicas":3,"repairAtMissing":1})),
            "replicate 3 (repair at 1 missing)"
        );
        assert_eq!(
            policy_text(&json!({"kind":"none","replicas":0,"repairAtMissing":0})),
            "none"
        );
        assert_eq!(policy_text(&json!("auto")), "auto");
        assert_eq!(policy_text(&json!({"replicate": 2})), "replicate 2");
        assert_eq!(
            policy_text(&json!({"erasure": {"k": 4, "m": 2}})),
            "erasure 4+2"
        );
        assert_eq!(policy_text(&Value::Null), "-");
    }

    #[test]
    fn layout_helpers() {
        assert_eq!(
            table(
                &["A", "LONG"],
                &[vec!["xyz".into(), "1".into()], vec!["b".into(), "".into()]]
            ),
            ["A    LONG", "xyz  1", "b"]
        );
        assert_eq!(
            fields(&[
                ("a", Some("1".into())),
                ("bbb", None),
                ("cc", Some("2".into()))
            ]),
            "a   1\ncc  2"
        );
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(list_cell(&json!([4, 11])), "4, 11");
        assert_eq!(list_cell(&json!([])), "none");
        assert_eq!(bytes_cell(&json!(2048)), "2.00 KiB");
        assert_eq!(bytes_cell(&json!(null)), "-");
    }
}
