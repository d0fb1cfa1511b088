//! `nodemedic preflight`: the one-shot repair of containerd and CNI state that runs as
//! `ExecStartPre=-/usr/bin/nodemedic preflight` before k3s starts. It never blocks k3s: any
//! failure is logged and the command still exits 0.

use crate::config::Config;

pub fn run(_cfg: &Config, dry_run: bool) {
    log::info!(
        "preflight: no repair steps are configured in this build{}",
        if dry_run { " (dry run)" } else { "" }
    );
}
