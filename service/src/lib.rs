//! The running service around the engine: ingest (snapshot diffs and change feeds written
//! through the store), the scheduler (the daily run, catch-up, re-evaluation after an
//! ingest) and the outbox workers (the `Channel` contract, the gate, drain and work).

pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod scheduler;
