//! Clock health while nodemedic runs (issue 20): the kernel's NTP state (`adjtimex(2)`,
//! the reading shared with preflight's pre-start check, [`crate::edge::timex`]) and steps
//! of the wall clock against CLOCK_MONOTONIC. Certificates, leases and containerd's
//! timestamps all trust the wall clock; a board without RTC that never synchronised, or a
//! clock that jumps, is worth a warning (`ClockUnsynchronized`) and numbers on a dashboard.
//! nodemedic never sets the clock.

pub mod detector;
pub(crate) mod judge;
pub mod metrics;
