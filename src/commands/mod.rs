//! The commands behind the CLI: [`dispatch`] loads the config a command needs, runs it and
//! returns its exit code (`cli::exit`). `main` only parses and exits.
//!
//! | command | body |
//! |---|---|
//! | `run` | [`crate::daemon`] |
//! | `preflight` | [`crate::preflight::command`] |
//! | `check` | [`check`] |
//! | `classify` | [`classify`] |
//! | `reset` | [`reset`] |
//! | `shutdown-marker` | [`shutdown_marker`] |
//! | `config check`, `config default` | here |

pub(crate) mod check;
pub(crate) mod classify;
pub(crate) mod reset;
pub(crate) mod shutdown_marker;

use std::path::Path;

use crate::cli::{Command, ConfigCommand, exit};
use crate::config::{self, Config, ConfigError, ConfigOrigin};
use crate::daemon::{self, DaemonError};
use crate::logging;

/// Runs one command; returns its exit code.
pub fn dispatch(cmd: Command) -> u8 {
    match cmd {
        Command::ShutdownMarker { config } => match load(config.as_deref()) {
            Ok((cfg, _)) => shutdown_marker::run(&cfg),
            Err(code) => code,
        },
        Command::Reset { config, problem } => match load(config.as_deref()) {
            Ok((cfg, _)) => reset::run(&cfg, problem),
            Err(code) => code,
        },
        Command::Classify { events } => classify::command(events),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_TEXT);
            exit::OK
        }
        Command::Config(ConfigCommand::Check { path }) => match config::load(Some(&path)) {
            Ok(_) => {
                println!("{}: valid", path.display());
                exit::OK
            }
            Err(e) => config_failed(&e),
        },
        Command::Run { config } => run(config.as_deref()),
        Command::Preflight { config, dry_run } => match load(config.as_deref()) {
            Ok((cfg, _)) => {
                logging::init(cfg.log.level.to_filter(), false);
                // Never block k3s: preflight failures are logged, and the unit uses `-` too.
                crate::preflight::command::run(&cfg, dry_run);
                crate::datastore::vacuum::preflight_step(&cfg, dry_run);
                exit::OK
            }
            Err(code) => code,
        },
        Command::Check { config, json } => check::command(config.as_deref(), json),
    }
}

/// The config, or the exit code after saying what is wrong with it.
fn load(explicit: Option<&Path>) -> Result<(Config, ConfigOrigin), u8> {
    config::load(explicit).map_err(|e| config_failed(&e))
}

fn config_failed(e: &ConfigError) -> u8 {
    eprintln!("nodemedic: {e}");
    eprintln!("nodemedic: run `nodemedic config default` to see every key with its allowed values");
    exit::CONFIG
}

/// `nodemedic run`: the daemon until SIGTERM.
fn run(explicit: Option<&Path>) -> u8 {
    let (cfg, origin) = match config::load(explicit) {
        Ok(c) => c,
        Err(e) => {
            logging::init(log::LevelFilter::Info, false);
            log::error!("{e}");
            return config_failed(&e);
        }
    };
    logging::init(cfg.log.level.to_filter(), false);
    match daemon::run(cfg, origin) {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("{e}");
            match e {
                DaemonError::State { .. } | DaemonError::Listen { .. } | DaemonError::Io(_) => {
                    exit::PROBLEM
                }
            }
        }
    }
}
