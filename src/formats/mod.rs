//! Pure parsers of formats that more than one subsystem reads. Nothing here imports
//! anything of the crate: they are leaves every subsystem may use.

pub mod mountinfo;
pub(crate) mod name_reservation;
