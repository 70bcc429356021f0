//! Agencies told of updates (①). An agency holds purposes (the legal-basis table in
//! `rules/purposes`), registers interest in persons (by its own pseudonyms) or in the whole
//! municipality where its purpose allows, and is told, as thin signed CloudEvents in one
//! contiguous sequence per purpose, when a register item it may receive changed. It pulls the
//! values it is entitled to, signed, and every event and pull is in the resident's record of
//! what was provided. The events are written by the store in the ingest's own transaction;
//! this crate delivers them (`delivery`) and serves the agencies' API (`api`). docs/agencies.md.

pub mod api;
pub mod auth;
pub mod cloudevent;
pub mod delivery;
pub mod dpop;
pub mod jose;
pub mod keys;
pub mod metrics;
pub mod office;
pub mod register;
pub mod sdjwt;
pub mod share;

pub use api::{router, serve, ApiConfig, ApiState};
pub use delivery::{Deliverer, DeliveryPolicy, PassReport};
pub use keys::{Keys, SigningKey};
pub use metrics::ExchangeMetrics;
