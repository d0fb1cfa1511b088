//! `nodemedic shutdown-marker`: run by a unit at system shutdown, records that this boot
//! ends cleanly. Its absence for the previous boot tells the daemon, at the next start, that
//! the boot ended in a power cut, a watchdog reset or a panic.

use crate::cli::exit;
use crate::config::Config;
use crate::daemon::wiring::{Edges, boot_id};

pub fn run(cfg: &Config) -> u8 {
    let edges = Edges::real(cfg);
    let boot = boot_id(edges.files.as_ref());
    match crate::state::mark_clean_shutdown(&cfg.state_dir, &boot, edges.clock.unix_secs()) {
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
