//! nodemedic: node-level self-healing for k3s nodes on small boards.
//!
//! Layout: pure parsers and the pure policy live beside the detectors that feed them;
//! every I/O edge is a small trait (`edge`, and one per subsystem) with a real
//! implementation and a recording fake.
//!
//! - `config`: the TOML config, validated, with the commented default.
//! - `model`: conditions shared by detectors, policy and exporter.
//! - `detect`, `hub`: detector threads and the place they publish to.
//! - `daemon`, `http`, `keepalive`, `liveness`: the running daemon.
//! - `state`, `audit`: what survives reboots.
//! - `check`, `preflight`, `cli`: the one-shot commands.

pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deadline;
pub mod detect;
pub mod edge;
pub mod http;
pub mod hub;
pub mod keepalive;
pub mod kernel;
pub mod kube;
pub mod liveness;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod mounts;
pub mod policy;
pub mod preflight;
pub mod reboot;
pub mod remedy;
pub mod runtime;
pub mod state;
pub mod timefmt;
pub mod watchdog;
