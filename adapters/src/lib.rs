//! Delivery channels: the transports behind the outbox (see docs/channels.md). Adapters know
//! nothing of rules: they carry a stored decision's title and a portal link to a person.

pub mod email;
mod http;
pub mod portal;
pub mod webhook;
pub mod webpush;

pub use email::{EmailChannel, EmailConfig};
pub use portal::PortalInbox;
pub use webpush::{check_endpoint, generate_vapid_keys, VapidKeys, WebPushChannel, WebPushConfig};
