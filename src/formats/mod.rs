//! Pure parsers of formats that more than one subsystem reads. Nothing here imports
//! anything of the crate: they are leaves every subsystem may use.

pub(crate) mod k3s_log;
pub mod mountinfo;
pub(crate) mod name_reservation;
