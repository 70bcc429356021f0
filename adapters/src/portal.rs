//! The portal inbox. A stored decision is already what the portal shows its recipients, so
//! delivering to the inbox only marks the row delivered; the portal API reads decisions.

use oshirase_service::outbox::{Channel, Delivery};
use oshirase_store::OutboxItem;

#[derive(Debug, Default, Clone, Copy)]
pub struct PortalInbox;

impl Channel for PortalInbox {
    fn name(&self) -> &'static str {
        "portal"
    }

    async fn send(&self, _item: &OutboxItem) -> Delivery {
        Delivery::Delivered
    }
}
