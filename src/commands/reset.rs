//! `nodemedic reset [PROBLEM]`: asks the running daemon to clear NeedsHuman. The request is
//! a file in the state directory; the policy loop applies it within a tick and records it in
//! the audit trail.

use crate::cli::exit;
use crate::config::Config;
use crate::remedy::policy_loop::RESET_REQUEST_FILE;
use crate::state::atomic_file::write_atomic;

pub fn run(cfg: &Config, problem: Option<String>) -> u8 {
    let what = problem.unwrap_or_else(|| "all".into());
    let path = cfg.state_dir.join(RESET_REQUEST_FILE);
    match write_atomic(&path, format!("{what}\n").as_bytes()) {
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
