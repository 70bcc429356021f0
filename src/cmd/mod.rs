//! One module a command.

pub mod agency;
pub mod demo;
pub mod evaluate;
pub mod explain;
pub mod ingest;
pub mod office;
pub mod outbox;
pub mod population;
pub mod rules;
pub mod run;
pub mod simulate;
pub mod vapid;
