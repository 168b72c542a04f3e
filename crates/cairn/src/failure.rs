//! Errors that end the process, each with its exit code.

use std::{fmt, process::ExitCode};

/// Exit codes, documented in `cairn --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The node answered with an error, a transfer broke, a local file could not be written, or
    /// `cairn start` could not start the node.
    Failed = 1,
    /// The node could not be reached.
    Unreachable = 2,
    /// Bad command line or input (`EX_USAGE`): unknown flag, malformed CID, missing file, bad
    /// configuration.
    Usage = 64,
}

/// An error with the exit code it maps to. Printed as `error: ` and the whole cause chain
/// ([`render_chain`]).
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    /// Bad input (exit 64).
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: Code::Usage,
            error: error.into(),
        }
    }

    /// The node is unreachable (exit 2).
    pub(crate) fn unreachable(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: Code::Unreachable,
            error: error.into(),
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code as u8)
    }
}

/// Exit codes of the `swarm` and `dataset` commands (durability.md §17), which differ from the
/// other commands' [`Code`]s: usage is 2 and an unreachable node is a plain error (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwarmCode {
    /// Done; for `dataset health` / `verify`, the dataset is healthy (or unmanaged).
    Ok = 0,
    /// The node answered with an error, could not be reached, or answered something unexpected.
    Failed = 1,
    /// Bad command line or argument, refused before any request.
    Usage = 2,
    /// `dataset health` / `verify`: the dataset is degraded or critical.
    Degraded = 3,
    /// `dataset health` / `verify`: the dataset is lost.
    Lost = 4,
}

impl SwarmCode {
    /// The process exit code.
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

impl Failure {
    /// The exit code of this failure for the `swarm` and `dataset` commands.
    pub(crate) fn swarm_code(&self) -> SwarmCode {
        match self.code {
            Code::Usage => SwarmCode::Usage,
            Code::Failed | Code::Unreachable => SwarmCode::Failed,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure {
            code: Code::Failed,
            error,
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({}): {}",
            self.code,
            self.code as u8,
            render_chain(&self.error)
        )
    }
}

/// The error and its causes, joined by `: ` like anyhow's `{:#}`, except that a cause already
/// quoted at the end of the message before it is not repeated (many error types both embed
/// their source in their message and return it from `source()`).
pub(crate) fn render_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.is_empty() {
            let repeated = previous == text
                || previous.ends_with(&format!(": {text}"))
                || previous.ends_with(&format!("({text})"));
            if repeated || text.is_empty() {
                continue;
            }
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

/// Writes a line to stderr; unlike `eprintln!` it does not panic when stderr is a closed pipe.
pub(crate) fn eprint_line(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Shorthand for the result of a command.
pub(crate) type Outcome<T = ()> = Result<T, Failure>;

/// The exit-code section of `cairn --help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   the node answered with an error (its status and message are printed), a transfer failed,
      a local file could not be written, or `cairn start` could not start or run the node
  2   the node could not be reached (not running, wrong --api address)
  64  bad usage or input: unknown flag, malformed CID (checked locally), missing FILE,
      invalid configuration
The swarm and dataset commands use other codes (durability.md §17; see `cairn swarm --help`):
  0 ok/healthy, 1 error (an unreachable node included), 2 usage, 3 degraded or critical, 4 lost";

/// The exit-code section of `cairn swarm --help` and `cairn dataset --help`.
pub(crate) const SWARM_EXIT_CODES_HELP: &str = "\
Exit codes (durability.md §17; unlike the other cairn commands):
  0   success; for `dataset health` and `dataset verify`, the dataset is healthy (or unmanaged,
      policy none)
  1   error: the node answered with an error (printed as `code: message`; with --json its
      error JSON also goes to stdout), the node could not be reached, or it answered
      something unexpected
  2   bad usage, refused locally before any request: unknown flag, malformed swarm id, peer id,
      CID, invite, policy, duration or size
  3   `dataset health` / `dataset verify`: the dataset is degraded or critical
  4   `dataset health` / `dataset verify`: the dataset is lost";

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "opening the store: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_are_printed_without_repeats() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(Wrapper(io)).context("cannot start the node");
        assert_eq!(
            render_chain(&err),
            "cannot start the node: opening the store: disk on fire"
        );
        let plain = anyhow!("inner").context("middle").context("outer");
        assert_eq!(render_chain(&plain), "outer: middle: inner");
        assert_eq!(format!("{plain:#}"), render_chain(&plain));
    }
}
