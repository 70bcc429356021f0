//! oshirase engine: the resident model, the Japanese age law, rule loading and compiling,
//! evaluation, the store, the scheduler and the outbox. It knows nothing of SMTP or HTTP:
//! delivery channels live in the adapters crate.

pub mod calendar;
pub mod catalogue;
pub mod clock;
pub mod eval;
pub mod feed;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod population;
pub mod resident;
pub mod rule;
pub mod ruletest;
pub mod scheduler;
pub mod script;
pub mod simulate;
pub mod store;

pub use catalogue::{load_dir, LoadError, LoadErrors, RuleSet};
pub use eval::{evaluate_day, explain, DayResult, Decision, DecisionKey, Explanation, RuleFailure};
pub use population::{
    load_snapshot, parse_snapshot, DataErrors, EventKind, LifeEvent, Population, Snapshot,
};
