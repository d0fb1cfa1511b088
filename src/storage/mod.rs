//! Storage health (issue 19): the kernel's storage errors (`fs_error`, `fs_readonly`,
//! `block_io_error`, `mmc_error`, `usb_storage_reset`, handed over by the kernel detector
//! through `model::StorageEvents`) attributed to a block device and, through major:minor
//! in mountinfo, to the mounts it backs (`attribution`); a bounded write probe of the
//! filesystems the node needs (`probe`, run on the mount prober's pool, handed in at the
//! daemon's wiring); the pure verdict (`judge`): `StorageErrors` per device and
//! `ReadOnlyFilesystem` per mount; the detector (`detector`) and its metrics.
//!
//! Only devices behind `/`, the k3s data dir, the state dir or a pod volume raise
//! anything: an empty SD slot's `mmc0` timeouts on a Pi that boots from USB are counted
//! and nothing more.

pub(crate) mod attribution;
pub mod detector;
pub(crate) mod judge;
pub mod metrics;
pub mod probe;
