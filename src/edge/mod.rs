//! I/O edges. Each is one small trait with a real implementation and a fake that tests
//! drive and inspect. The kernel log source, mount prober, container runtime, node API and
//! watchdog edges live with their subsystems; the cross-cutting ones live here.

pub mod clock;
pub(crate) mod command;
pub mod dbus;
pub(crate) mod deadline;
pub(crate) mod eventfd;
pub(crate) mod grpc;
pub mod host_files;
pub(crate) mod http_get;
pub mod journal;
pub mod notify;
pub(crate) mod sandbox_store;
pub mod timex;

#[cfg(any(test, feature = "fakes"))]
pub use clock::FakeClock;
pub use clock::{Clock, SystemClock};
#[cfg(any(test, feature = "fakes"))]
pub use host_files::FakeFiles;
pub use host_files::{HostFiles, RootedFiles};
#[cfg(any(test, feature = "fakes"))]
pub use notify::RecordingNotifier;
pub use notify::{Notice, Notifier, SdNotifier};
