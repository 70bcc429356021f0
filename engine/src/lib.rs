//! The pure core of oshirase: the resident model, the Japanese age law, rule loading and
//! compiling, evaluation and its explanation, rule test cases, change feeds and simulation.
//! Everything here can be computed from a register, a catalogue and a day: no database, no
//! async runtime, no transport (the `store`, `service` and `adapters` crates hold those).

pub mod calendar;
pub mod catalogue;
pub mod clock;
pub mod describe;
pub mod eval;
pub mod explain;
pub mod feed;
pub mod ids;
pub mod items;
pub mod layers;
pub mod municipalities;
mod nesting;
pub mod population;
pub mod purposes;
pub mod resident;
pub mod rule;
pub mod ruletest;
pub mod script;
pub mod shown;
pub mod simulate;
pub mod trigger;
pub mod wording;

pub use catalogue::{load_dir, LoadError, LoadErrors, RuleSet};
pub use eval::{evaluate_day, evaluate_run, DayResult, Decision, DecisionKey, RuleFailure};
pub use explain::{explain, ExplainOutcome, Explanation};
pub use population::{
    load_snapshot, parse_snapshot, DataErrors, EventKind, LifeEvent, Population, Snapshot,
};
