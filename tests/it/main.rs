//! The one integration-test binary (`autotests = false`): one link instead of one per file.
//!
//! What is real here: the `nodemedic` binary, /dev/kmsg, FUSE mounts, containerd, systemd in
//! nspawn, reboot(2) in a PID namespace. Stand-ins: the Kubernetes API server (an in-process
//! fake speaking the real wire protocol, checked against kubectl) and the hardware watchdog
//! (a fake device file). Tests that need root or kernel features skip loudly on a dev box and
//! fail under CI (`CI=true`).

mod support;

mod cli_config;
mod containerd_config;
mod containerd_preflight;
mod containerd_runtime;
mod containerd_snapshots;
mod containerd_store;
mod daemon_lifecycle;
mod datastore;
mod deb_package;
mod glibc_ceiling;
mod http_abuse;
mod journald_logging;
mod k3s_probes;
mod k3s_systemd;
mod kernel_forgery;
mod kernel_formats;
mod kernel_kmsg;
mod kube_api;
mod kube_daemon;
mod limits;
mod memory_evict;
mod memory_pressure;
mod monitoring;
mod mounts_act;
mod mounts_capacity;
mod mounts_daemon;
mod mounts_real;
mod mounts_unmount;
mod mounts_user;
mod policy_daemon;
mod power;
mod power_boot_end;
mod preflight_deadline;
mod reboot_pidns;
mod simulated_reboots;
mod state_crash;
mod state_dir_faults;
mod storage_real;
mod stuck_loop;
mod systemd_nspawn;
mod systemd_units;
mod watchdog_shutdown;
