//! Delivery channels: the transports behind the outbox (see docs/channels.md). Adapters know
//! nothing of rules: they carry a stored decision's title and a portal link to a person.

pub mod email;
pub mod portal;

pub use email::{EmailChannel, EmailConfig};
pub use portal::PortalInbox;
