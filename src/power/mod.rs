//! Power and thermal health of the board, and why the previous boot ended.
//!
//! | file | what |
//! |---|---|
//! | `hwmon.rs` | finds the `rpi_volt` hwmon chip by name; the alarm's format |
//! | `alarm.rs` | the alarm file held open: poll(2) on kernfs, a timer elsewhere |
//! | `thermal.rs` | thermal zones and their trip points |
//! | `mailbox.rs` | the firmware's throttle flags through `/dev/vcio` |
//! | `judge.rs` | pure: episodes from alarm transitions, sustained heat, the conditions |
//! | `store.rs` | `power-state.json`: counts and the state the next boot reads |
//! | `detector.rs` | the I/O around the judge |
//! | `metrics.rs` | the metrics, and `nodemedic_previous_boot_end_total` |
//! | `boot_end/` | why the previous boot ended (pstore, journal, the state dir), decided at start |

pub(crate) mod alarm;
pub(crate) mod boot_end;
pub(crate) mod detector;
pub(crate) mod hwmon;
pub(crate) mod judge;
pub(crate) mod mailbox;
pub(crate) mod metrics;
pub(crate) mod store;
pub(crate) mod thermal;
