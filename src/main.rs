//! Thin entry point: parse, load config, dispatch, map errors to exit codes.

use clap::Parser;
use std::process::ExitCode;

use nodemedic::cli::{Cli, Command, ConfigCommand, exit};
use nodemedic::commands::check;
use nodemedic::config::{self, ConfigError};
use nodemedic::daemon::{self, DaemonError, Edges};
use nodemedic::{logging, preflight};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    ExitCode::from(dispatch(cli.command))
}

fn config_failed(e: &ConfigError) -> u8 {
    eprintln!("nodemedic: {e}");
    eprintln!("nodemedic: run `nodemedic config default` to see every key with its allowed values");
    exit::CONFIG
}

fn dispatch(cmd: Command) -> u8 {
    match cmd {
        Command::ShutdownMarker { config } => {
            let (cfg, _) = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failed(&e),
            };
            let edges = Edges::real(&cfg);
            let boot = daemon::boot_id(edges.files.as_ref());
            match nodemedic::state::mark_clean_shutdown(
                &cfg.state_dir,
                &boot,
                edges.clock.unix_secs(),
            ) {
                Ok(()) => {
                    eprintln!(
                        "nodemedic: clean shutdown of boot {boot} recorded in {}",
                        cfg.state_dir.display()
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("nodemedic: cannot record the clean shutdown: {e}");
                    exit::PROBLEM
                }
            }
        }
        Command::Reset { config, problem } => {
            let (cfg, _) = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failed(&e),
            };
            let what = problem.unwrap_or_else(|| "all".into());
            let path = cfg
                .state_dir
                .join(nodemedic::remedy::policy_loop::RESET_REQUEST_FILE);
            match nodemedic::state::atomic_file::write_atomic(&path, format!("{what}\n").as_bytes())
            {
                Ok(()) => {
                    eprintln!(
                        "nodemedic: reset of {what} requested ({}); the daemon applies it within seconds and records it in the audit trail",
                        path.display()
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!(
                        "nodemedic: cannot write {}: {e}; run as root, and check the state directory",
                        path.display()
                    );
                    exit::PROBLEM
                }
            }
        }
        Command::Classify => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            match nodemedic::commands::classify::run(stdin, stdout) {
                Ok(()) => exit::OK,
                // A closed pipe (`| head`) is a normal end, not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
                Err(e) => {
                    eprintln!("nodemedic classify: {e}");
                    exit::PROBLEM
                }
            }
        }
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
        Command::Run { config } => {
            let (cfg, origin) = match config::load(config.as_deref()) {
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
                        DaemonError::State { .. }
                        | DaemonError::Listen { .. }
                        | DaemonError::Io(_) => exit::PROBLEM,
                    }
                }
            }
        }
        Command::Preflight { config, dry_run } => {
            let (cfg, _origin) = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_failed(&e),
            };
            logging::init(cfg.log.level.to_filter(), false);
            // Never block k3s: preflight failures are logged, and the unit uses `-` too.
            preflight::command::run(&cfg, dry_run);
            exit::OK
        }
        Command::Check { config, json } => {
            let (cfg, origin) = match config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("nodemedic: {e}");
                    return exit::USAGE;
                }
            };
            logging::init(log::LevelFilter::Warn, true);
            let edges = Edges::real(&cfg);
            let report = check::build_report(&cfg, &origin, &edges);
            let mut out = std::io::stdout().lock();
            let written = if json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|_| std::io::Write::write_all(&mut out, b"\n"))
            } else {
                check::render_table(&report, &mut out)
            };
            if written.is_err() {
                return exit::PROBLEM;
            }
            if report.healthy {
                exit::OK
            } else {
                exit::PROBLEM
            }
        }
    }
}
