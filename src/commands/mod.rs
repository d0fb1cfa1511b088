//! The one-shot commands behind the CLI.

pub mod check;
pub mod classify;
