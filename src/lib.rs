//! nodemedic: node-level self-healing for k3s nodes on small boards.
//!
//! Detectors on their own threads publish conditions to the hub; the policy loop feeds
//! them to a pure engine and carries out its decisions through actuators that sit behind
//! small traits. Every I/O edge is a trait with a real implementation and a recording fake
//! (fakes only in tests and with the `fakes` feature, never in the release binary).
//!
//! # The tree
//!
//! | module | what |
//! |---|---|
//! | `model` | shared vocabulary: conditions, remedies, pod usage, the NFS-servers-down view |
//! | `config` | the TOML file: one `XxxSection` per table, loading, validation, defaults |
//! | `edge` | the machine: one `Clock`, host files, systemd notify, subprocesses, gRPC, containerd's sandbox store |
//! | `formats` | parsers more than one subsystem reads (mountinfo, containerd's name reservation) |
//! | `timefmt` | RFC 3339 |
//! | `hub`, `detect` | where detectors publish; the detector threads |
//! | `state`, `audit` | what survives reboots: `state.json` and other state-dir files; the audit trail |
//! | `liveness`, `keepalive`, `http`, `metrics`, `logging` | heartbeats, systemd keep-alives, `/metrics` `/status` `/healthz`, the registry, journald |
//! | `kernel`, `mounts`, `memory`, `runtime`, `storage`, `limits`, `power` | detectors: parsers, a pure judge, the detector (I/O), metrics |
//! | `k3s`, `clock` | k3s's own liveness, unit state, journal and reboot readiness; clock health |
//! | `datastore`, `certs` | k3s's datastore (etcd metrics, kine's sqlite, the preflight VACUUM) and certificates: the same shape |
//! | `preflight` | the one-shot repair before k3s starts |
//! | `kube` | the Kubernetes API edge and its pure planners |
//! | `watchdog` | the hardware watchdog device and its feeder |
//! | `policy` | the pure escalation engine |
//! | `remedy` | the policy loop and the actuators it drives, including the reboot |
//! | `daemon` | `nodemedic run`: lifecycle and wiring |
//! | `commands`, `cli` | the other commands; the command line |
//!
//! # Dependency rules
//!
//! Checked by a unit test (`architecture`) that reads every `crate::` path of every file:
//!
//! - **Shared core** = the leaves `model`, `config`, `edge`, `formats`, `timefmt` and the
//!   services `hub`, `detect`, `state`, `audit`, `liveness`, `metrics`, `logging`, `http`,
//!   `keepalive`. Leaves import nothing of the crate except `config` -> `model`. Services
//!   import only the shared core; `state` also imports `policy`, because `state.json`
//!   carries the engine's state. They are the core because every subsystem needs them
//!   (vocabulary, config, time and files, the hub to publish to, the state dir, metrics)
//!   and they know nothing of any subsystem.
//! - **A subsystem** (`kernel`, `mounts`, `memory`, `runtime`, `storage`, `limits`, `power`,
//!   `preflight`, `kube`, `watchdog`, `k3s`, `clock`, `datastore`, `certs`) imports only the
//!   shared core and itself. Facts that cross subsystems go through `model` (`NfsServersDown`,
//!   `PodUsage`, `StorageEvents`, `LimitHits`, `CriHealth`, `LocalEtcdView`, `EventOutbox`), a
//!   shared parser (`formats`), a state-dir file (`state::preflight_totals`,
//!   `state::pause_annotation`), an edge both use (`edge::sandbox_store`), or are handed in at
//!   `daemon::wiring` (the OOM-kill counter, the storage write probe on the mount prober's
//!   pool, the actuator adapters, the apiserver probe).
//! - **`policy`** imports only `model` and `config`.
//! - **`remedy`** imports the shared core, `policy`, and the two subsystems it acts through
//!   itself, `kube` (the cluster) and `watchdog` (the reboot); the detector subsystems'
//!   actuators reach it as the traits of `remedy::actuators`, implemented in
//!   `daemon::wiring`.
//! - **Only `daemon` and `commands` see everything**; `cli` imports nothing.
//! - No cycle between top-level modules.

pub mod audit;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub(crate) mod daemon;
pub mod datastore;
pub mod detect;
pub mod edge;
pub mod formats;
pub(crate) mod http;
pub(crate) mod hub;
pub mod k3s;
pub(crate) mod keepalive;
pub mod kernel;
pub mod kube;
pub(crate) mod limits;
pub(crate) mod liveness;
pub(crate) mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod mounts;
pub(crate) mod policy;
pub mod power;
pub mod preflight;
pub mod remedy;
pub mod runtime;
pub mod state;
pub mod storage;
pub(crate) mod timefmt;
pub mod watchdog;

#[cfg(test)]
mod architecture;
