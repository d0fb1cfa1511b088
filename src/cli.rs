//! Command-line surface (clap). Parsing only; `main` dispatches and maps errors to exit
//! codes in one place.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    /// `check`: a problem condition holds. Other commands: a runtime failure.
    pub const PROBLEM: u8 = 1;
    /// Bad command line; also `check` with a bad config (monitoring-plugin convention).
    pub const USAGE: u8 = 2;
    /// EX_CONFIG from sysexits.h: the unit's `RestartPreventExitStatus=78` stops systemd
    /// from restart-looping on a config typo.
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "nodemedic",
    version,
    propagate_version = true,
    about = "Node-level self-healing for k3s nodes: watches kernel stalls, hung mounts, leaked sandboxes and memory pressure, and heals least-disruptive first"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (systemd Type=notify).
    Run {
        /// Config file [default: /etc/nodemedic/config.toml; missing means built-in defaults]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// One-shot repair of containerd/CNI state before k3s starts (ExecStartPre=).
    Preflight {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print what would be removed and why; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Diagnose this node now. Exit 0 healthy, 1 problem, 2 usage or config error.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Record that this boot is shutting down cleanly (run by a unit at system shutdown).
    ShutdownMarker {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Clear NeedsHuman (all problems, or those whose episode starts with PROBLEM, e.g.
    /// `KernelRCUStall` or `NetworkMountHung:/mnt/nas`) once the cause is fixed. The running
    /// daemon picks the request up within a tick.
    Reset {
        #[arg(long, short)]
        config: Option<PathBuf>,
        problem: Option<String>,
    },
    /// Classify saved log lines from stdin: one JSON object per line (kind, fields), or
    /// with --events one per complete event (a whole splat), written as each completes.
    Classify {
        /// One JSON object per event (a whole splat, its fields merged) instead of per line.
        #[arg(long)]
        events: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; exit 0 if valid, 78 with the problems if not.
    Check { path: PathBuf },
    /// Print the full default config, commented; valid as input.
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
