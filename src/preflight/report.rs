//! What happened to each planned item: the lines of `preflight.json` and what the totals
//! count (a type of its own so `totals` does not import the run that feeds it).

use serde::{Deserialize, Serialize};

use super::plan::Item;

/// What happened to one planned item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "result_detail", rename_all = "snake_case")]
pub enum ItemResult {
    Done,
    AlreadyGone,
    Failed(String),
    /// Not attempted: budget spent.
    Skipped,
    /// Not attempted: its kind is switched off or over its cap (see the decisions).
    Withheld(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    #[serde(flatten)]
    pub item: Item,
    /// Human-readable line, as in the dry run.
    pub text: String,
    #[serde(flatten)]
    pub result: ItemResult,
}
