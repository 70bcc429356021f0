//! E-mail notices. The message carries the notice's title and a link to the portal, never the
//! draft: the details stay behind the portal's authentication. Its Message-ID is derived from
//! the decision key and the recipient, so a repeat after a crash is the same message.
//!
//! This channel writes RFC 5322 `.eml` files (for the demo and for inspection); sending over
//! SMTP goes through the same message builder.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use lettre::message::{header::ContentType, Mailbox, Message, MultiPart, SinglePart};
use oshirase_engine::outbox::{Channel, Delivery};
use oshirase_engine::store::OutboxItem;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The sender, e.g. `"Toshima Village <noreply@example.lg.jp>"`.
    pub from: Mailbox,
    /// Base URL of the resident portal; notices link to `{portal_url}/notices/{key}`.
    pub portal_url: String,
    /// The domain part of Message-IDs.
    pub message_id_domain: String,
}

/// Writes each notice as `{dir}/{outbox id}.eml`.
pub struct EmailChannel {
    config: EmailConfig,
    dir: PathBuf,
    /// Recipient id → e-mail address, from the register.
    addresses: HashMap<String, String>,
    /// The Date header (the engine's clock, not the wall clock).
    date: DateTime<FixedOffset>,
}

impl EmailChannel {
    pub fn to_dir(
        config: EmailConfig,
        dir: PathBuf,
        addresses: HashMap<String, String>,
        date: DateTime<FixedOffset>,
    ) -> Self {
        Self {
            config,
            dir,
            addresses,
            date,
        }
    }

    /// A stable Message-ID for one decision and one recipient.
    pub fn message_id(&self, item: &OutboxItem) -> String {
        let h = Sha256::digest(format!("{}\n{}", item.decision_key, item.recipient).as_bytes());
        let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("<{hex}@{}>", self.config.message_id_domain)
    }

    /// Builds the message: title as subject, a short text and HTML part with the portal link.
    pub fn build(&self, item: &OutboxItem) -> Result<Message, Delivery> {
        let permanent = |reason: String| Delivery::Permanent { reason };
        let address = self.addresses.get(&item.recipient).ok_or_else(|| {
            permanent(format!(
                "recipient {} has no e-mail address",
                item.recipient
            ))
        })?;
        let to: Mailbox = address
            .parse()
            .map_err(|e| permanent(format!("recipient {}: bad address: {e}", item.recipient)))?;
        let title = item.decision["title"]["ja"].as_str().unwrap_or("お知らせ");
        let deadline = item
            .deadline
            .map(|d| format!("\n期限: {d}"))
            .unwrap_or_default();
        let link = format!(
            "{}/notices/{}",
            self.config.portal_url.trim_end_matches('/'),
            item.decision_key
        );
        let text = format!(
            "{title}\n\nあなたあてのお知らせがあります。申請書は入力済みです。内容の確認と手続はポータルから行えます。{deadline}\n\n{link}\n\nこのメールは送信専用です。"
        );
        let html = format!(
            "<!doctype html><html lang=\"ja\"><body><p><strong>{}</strong></p><p>あなたあてのお知らせがあります。申請書は入力済みです。内容の確認と手続はポータルから行えます。{}</p><p><a href=\"{}\">ポータルで確認する</a></p></body></html>",
            escape(title),
            escape(&deadline).replace('\n', "<br>"),
            escape(&link)
        );
        let date: std::time::SystemTime = self.date.with_timezone(&chrono::Utc).into();
        Message::builder()
            .from(self.config.from.clone())
            .to(to)
            .subject(title)
            .message_id(Some(self.message_id(item)))
            .date(date)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| permanent(format!("cannot build the message: {e}")))
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    async fn send(&self, item: &OutboxItem) -> Delivery {
        let message = match self.build(item) {
            Ok(m) => m,
            Err(d) => return d,
        };
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            return Delivery::Retry {
                after: None,
                reason: format!("cannot create {}: {e}", self.dir.display()),
            };
        }
        let path = self.dir.join(format!("{}.eml", item.id));
        match std::fs::write(&path, message.formatted()) {
            Ok(()) => Delivery::Delivered,
            // A full or unwritable disk may recover: retry later.
            Err(e) => Delivery::Retry {
                after: None,
                reason: format!("cannot write {}: {e}", path.display()),
            },
        }
    }
}
