//! I/O edges. Each is one small trait with a real implementation and a fake that tests
//! drive and inspect. The kernel log source, mount prober, container runtime, node API and
//! watchdog edges live with their subsystems; the cross-cutting ones live here.

pub mod clock;
pub mod command;
pub mod grpc;
pub mod host_files;
pub mod notify;

pub use clock::{Clock, FakeClock, SystemClock};
pub use host_files::{FakeFiles, HostFiles, RootedFiles};
pub use notify::{Notice, Notifier, RecordingNotifier, SdNotifier};
