//! E-mail notices. The message carries the notice's title, its deadline and a link to the
//! portal, never the draft: the details stay behind the portal's authentication. Its
//! Message-ID is derived from the decision key and the recipient, so a repeat after a crash is
//! the same message.
//!
//! One message builder, two transports: `.eml` files in a directory (the demo, inspection) and
//! SMTP through lettre's pooled `AsyncSmtpTransport` (docs/email.md). The recipient's address
//! is read from the register at send time; logs and failure reasons carry ids, never it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The lettre this crate is built with, for callers that talk to the same transport.
pub use lettre;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::{AsyncSmtpTransport, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{Address, AsyncTransport, Tokio1Executor};
use oshirase_engine::clock::Clock;
use oshirase_engine::rule::Application;
use oshirase_engine::wording::{self, DateStyle};
use oshirase_service::outbox::{Channel, Delivery, Unhealthy};
use oshirase_store::{redact, OutboxItem, Store};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// The pooled SMTP transport type used here.
pub type SmtpTransport = AsyncSmtpTransport<Tokio1Executor>;

#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The sender, e.g. `"Toshima Village <noreply@example.lg.jp>"`.
    pub from: Mailbox,
    /// Base URL of the resident portal (`https://…`); notices link to
    /// `{portal_url}/notices/{key}`, the unsubscribe link is `{portal_url}/preferences`.
    pub portal_url: String,
    /// The domain part of Message-IDs.
    pub message_id_domain: String,
}

/// Where and how to reach the SMTP server.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (implicit TLS); `user:password@` may stand before the
    /// host (percent-encoded).
    pub url: String,
    /// Credentials given apart from the URL (both or neither; not together with URL ones).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Connections kept open and the most used at once.
    pub pool_size: u32,
    /// Limit for one whole send (connecting through the final reply) and for a health check.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// `url` with a pool of 8 connections and a 30 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password: None,
            pool_size: 8,
            timeout: Duration::from_secs(30),
        }
    }

    /// Builds lettre's pooled transport. Must be called inside a tokio runtime (the pool
    /// runs a clean-up task).
    pub fn transport(&self) -> Result<SmtpTransport, EmailError> {
        Ok(self.builder()?.build())
    }

    /// The checked settings as a lettre builder (each `build` is a new, empty pool).
    fn builder(&self) -> Result<AsyncSmtpTransportBuilder, EmailError> {
        let shown = redact(&self.url);
        let bad = |reason: String| EmailError::Url {
            url: shown.clone(),
            reason,
        };
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| bad("expected smtp://host:port or smtps://host:port".into()))?;
        if scheme != "smtp" && scheme != "smtps" {
            return Err(bad(format!(
                "the scheme must be smtp or smtps, not {scheme:?}"
            )));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let url_user = authority.rsplit_once('@').map(|(u, _)| u);
        if let Some(u) = url_user {
            // lettre ignores a user without a password; sending unauthenticated instead of
            // failing would only surface as rejections later.
            if !u.contains(':') {
                return Err(bad(
                    "a user in the URL needs a password (user:password@)".into()
                ));
            }
        }
        let mut builder = SmtpTransport::from_url(&self.url).map_err(|e| bad(e.to_string()))?;
        match (&self.user, &self.password) {
            (None, None) => {}
            (Some(user), Some(password)) => {
                if url_user.is_some() {
                    return Err(EmailError::Settings(
                        "credentials are given both in the URL and as user/password".into(),
                    ));
                }
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            _ => {
                return Err(EmailError::Settings(
                    "an SMTP user needs a password and a password needs a user".into(),
                ))
            }
        }
        if self.pool_size == 0 {
            return Err(EmailError::Settings(
                "the SMTP pool size must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(EmailError::Settings(
                "the SMTP timeout must be more than zero".into(),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EmailError::Settings(
                "the SMTP transport must be created inside a tokio runtime".into(),
            ));
        }
        // lettre applies its timeout to connecting only; the channel bounds the rest.
        Ok(builder
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(self.pool_size)))
    }
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &redact(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A configuration the channel cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("bad SMTP URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("bad e-mail settings: {0}")]
    Settings(String),
}

enum Transport {
    /// Each notice is written as `{dir}/{outbox id}.eml`.
    Dir(PathBuf),
    Smtp(Box<Smtp>),
}

type Op<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The SMTP side: the current pool and what is needed to replace it.
struct Smtp {
    mailer: RwLock<SmtpTransport>,
    builder: AsyncSmtpTransportBuilder,
    /// Sends under way at once, at most the pool size: lettre's pool bounds only the
    /// connections it keeps, not those it opens.
    slots: Semaphore,
    timeout: Duration,
    /// The URL without its password, for health messages.
    server: String,
}

impl Smtp {
    fn current(&self) -> SmtpTransport {
        self.mailer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `op` (a use of the current pool) for at most the timeout; `None` if it ran out.
    async fn bounded<T: Send + 'static>(&self, mut op: Op<T>) -> Option<T> {
        match tokio::time::timeout(self.timeout, &mut op).await {
            Ok(v) => Some(v),
            Err(_) => {
                self.retire(op);
                None
            }
        }
    }

    /// After a timeout: an SMTP conversation cut off mid-command must not go back into the
    /// pool, where the next send would read the late reply as its own. The pool is replaced;
    /// the old one is shut (its idle connections closed) before the abandoned operation is
    /// dropped, so its connection is closed too instead of being reused. Until then it may
    /// still finish by itself.
    fn retire<T: Send + 'static>(&self, op: Op<T>) {
        let fresh = self.builder.clone().build();
        let old = std::mem::replace(
            &mut *self.mailer.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        let grace = self.timeout;
        tokio::spawn(async move {
            tokio::join!(old.shutdown(), async {
                let _ = tokio::time::timeout(grace, op).await;
            });
        });
    }
}

/// The e-mail channel (`email` rows of the outbox).
pub struct EmailChannel {
    config: EmailConfig,
    /// The register: addresses are read at send time.
    store: Store,
    /// The Date header (the engine's clock, not the wall clock).
    clock: Arc<dyn Clock>,
    transport: Transport,
}

impl EmailChannel {
    /// Writes each notice as `{dir}/{outbox id}.eml`.
    pub fn to_dir(
        config: EmailConfig,
        dir: PathBuf,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EmailError> {
        check(&config)?;
        Ok(Self {
            config,
            store,
            clock,
            transport: Transport::Dir(dir),
        })
    }

    /// Sends over SMTP through a connection pool. Must be called inside a tokio runtime.
    pub fn smtp(
        config: EmailConfig,
        smtp: &SmtpConfig,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EmailError> {
        check(&config)?;
        let builder = smtp.builder()?;
        Ok(Self {
            config,
            store,
            clock,
            transport: Transport::Smtp(Box::new(Smtp {
                mailer: RwLock::new(builder.clone().build()),
                builder,
                slots: Semaphore::new(smtp.pool_size as usize),
                timeout: smtp.timeout,
                server: redact(&smtp.url),
            })),
        })
    }

    /// The pooled SMTP transport in use now, if this channel sends over SMTP.
    pub fn smtp_transport(&self) -> Option<SmtpTransport> {
        match &self.transport {
            Transport::Smtp(smtp) => Some(smtp.current()),
            Transport::Dir(_) => None,
        }
    }

    /// Closes the pooled SMTP connections (QUIT); later sends fail with Retry.
    pub async fn close(&self) {
        if let Transport::Smtp(smtp) = &self.transport {
            smtp.current().shutdown().await;
        }
    }

    /// A stable Message-ID for one decision and one recipient, and for status news also
    /// its topic: a repeat is the same message, and news is never taken for the notice.
    pub fn message_id(&self, item: &OutboxItem) -> String {
        message_id(item, &self.config.message_id_domain)
    }

    /// The recipient's address from the register: the record read with the claim, else
    /// (an item built elsewhere, or nobody on the register then) the store now.
    async fn recipient(&self, item: &OutboxItem) -> Result<Mailbox, Delivery> {
        let id = &item.recipient;
        let resident = match &item.resident {
            Some(r) => Some(r.clone()),
            None => self
                .store
                .resident(id)
                .await
                // The database may come back: try again later.
                .map_err(|e| Delivery::Retry {
                    after: None,
                    reason: format!("cannot read recipient {id} from the register: {e}"),
                })?,
        };
        let permanent = |reason: String| Delivery::Permanent { reason };
        let resident = resident.ok_or_else(|| {
            permanent(format!(
                "recipient {id} has no e-mail address (not on the register)"
            ))
        })?;
        let email = resident
            .contact
            .email
            .ok_or_else(|| permanent(format!("recipient {id} has no e-mail address")))?;
        let address: Address = email.to_string().parse().map_err(|e| {
            permanent(format!(
                "recipient {id}: the register's e-mail address is not usable: {e}"
            ))
        })?;
        Ok(Mailbox::new(None, address))
    }

    /// Builds the message for `item`, reading the recipient's address from the register.
    pub async fn build(&self, item: &OutboxItem) -> Result<Message, Delivery> {
        let to = self.recipient(item).await?;
        self.compose(item, to)
    }

    /// Title as subject (for news, that the application's status changed), a short text and
    /// HTML part with the deadline and the portal link.
    fn compose(&self, item: &OutboxItem, to: Mailbox) -> Result<Message, Delivery> {
        let title: String = item
            .notice
            .title
            .ja
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let portal = self.config.portal_url.trim_end_matches('/');
        let sender = self.config.from.name.as_deref().unwrap_or("");
        let (text, html) = letter(item, &title, sender, portal);
        let date: SystemTime = self.clock.now().with_timezone(&chrono::Utc).into();
        let mut builder = Message::builder()
            .from(self.config.from.clone())
            .to(to)
            .subject(subject(item, &title))
            .message_id(Some(self.message_id(item)))
            .date(date);
        // Critical notices cannot be muted, so they offer no unsubscribe link.
        if !item.notice.critical {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{portal}/preferences>"),
            ));
        }
        builder
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
            .map_err(|e| Delivery::Permanent {
                reason: format!("cannot build the message: {e}"),
            })
    }

    async fn deliver(&self, item: &OutboxItem, message: Message) -> Delivery {
        match &self.transport {
            Transport::Dir(dir) => {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    return Delivery::Retry {
                        after: None,
                        reason: format!("cannot create {}: {e}", dir.display()),
                    };
                }
                let path = dir.join(format!("{}.eml", item.id));
                match std::fs::write(&path, message.formatted()) {
                    Ok(()) => Delivery::Delivered,
                    // A full or unwritable disk may recover: retry later.
                    Err(e) => Delivery::Retry {
                        after: None,
                        reason: format!("cannot write {}: {e}", path.display()),
                    },
                }
            }
            Transport::Smtp(smtp) => {
                // The semaphore is never closed, so acquiring cannot fail.
                let _slot = smtp.slots.acquire().await;
                let mailer = smtp.current();
                match smtp
                    .bounded(Box::pin(async move { mailer.send(message).await }))
                    .await
                {
                    Some(Ok(_)) => Delivery::Delivered,
                    Some(Err(e)) => smtp_failure(&e),
                    None => Delivery::Retry {
                        after: None,
                        reason: format!(
                            "SMTP timeout: no reply within {} s",
                            smtp.timeout.as_secs_f64()
                        ),
                    },
                }
            }
        }
    }
}

/// The Message-ID of `item` in `domain`: a hash of the decision key and the recipient, and
/// for status news also of its topic.
fn message_id(item: &OutboxItem, domain: &str) -> String {
    let mut seed = format!("{}\n{}", item.decision_key, item.recipient);
    if let Some(news) = &item.news {
        seed.push('\n');
        seed.push_str(&news.topic());
    }
    let h = Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// Checks what every transport relies on.
fn check(config: &EmailConfig) -> Result<(), EmailError> {
    let url = &config.portal_url;
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.is_ascii()
        && !url.contains(|c: char| {
            c.is_ascii_whitespace() || c.is_ascii_control() || c == '<' || c == '>' || c == '"'
        });
    if !ok {
        return Err(EmailError::Settings(format!(
            "the portal URL {url:?} must be an http(s) URL without spaces, quotes or angle brackets"
        )));
    }
    let domain = &config.message_id_domain;
    if domain.is_empty()
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(EmailError::Settings(format!(
            "the Message-ID domain {domain:?} must be a domain name"
        )));
    }
    Ok(())
}

/// The outcome of a failed SMTP send: a reply code decides (4xx Retry, 5xx Permanent);
/// anything without one (refused or dropped connection, timeout, TLS) is worth a retry.
fn smtp_failure(e: &lettre::transport::smtp::Error) -> Delivery {
    use std::error::Error as _;
    if let Some(code) = e.status() {
        let text = e.source().map(|s| s.to_string()).unwrap_or_default();
        let reason = without_addresses(&format!("SMTP {code} {text}"));
        return if e.is_permanent() {
            Delivery::Permanent { reason }
        } else {
            Delivery::Retry {
                after: None,
                reason,
            }
        };
    }
    let what = if e.is_timeout() {
        "SMTP timeout"
    } else {
        "SMTP connection failed"
    };
    Delivery::Retry {
        after: None,
        reason: without_addresses(&format!("{what}: {e}")),
    }
}

/// Replaces every word with an `@` (servers quote the recipient in their replies).
fn without_addresses(s: &str) -> String {
    s.split_whitespace()
        .map(|w| if w.contains('@') { "<address>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
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
        let delivery = match self.build(item).await {
            Ok(message) => self.deliver(item, message).await,
            Err(d) => d,
        };
        match &delivery {
            Delivery::Delivered => {
                tracing::debug!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient, "e-mail sent")
            }
            Delivery::Retry { reason, .. }
            | Delivery::Permanent { reason }
            | Delivery::Gone { reason } => {
                tracing::warn!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient, reason = %reason, "e-mail not sent")
            }
        }
        delivery
    }

    async fn health(&self) -> Result<(), Unhealthy> {
        let result = match &self.transport {
            Transport::Dir(dir) => {
                let probe = dir.join(format!(".health-{}", std::process::id()));
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&probe, b"ok"))
                    .and_then(|()| std::fs::remove_file(&probe))
                    .map_err(|e| format!("cannot write e-mails to {}: {e}", dir.display()))
            }
            Transport::Smtp(smtp) => {
                let server = &smtp.server;
                let mailer = smtp.current();
                match smtp
                    .bounded(Box::pin(async move { mailer.test_connection().await }))
                    .await
                {
                    Some(Ok(true)) => Ok(()),
                    Some(Ok(false)) => {
                        Err(format!("the SMTP server {server} does not answer NOOP"))
                    }
                    Some(Err(e)) => Err(format!(
                        "the SMTP server {server} is not usable: {}",
                        without_addresses(&e.to_string())
                    )),
                    None => Err(format!(
                        "the SMTP server {server} does not answer within {} s",
                        smtp.timeout.as_secs_f64()
                    )),
                }
            }
        };
        result.map_err(Unhealthy)
    }
}

/// What one paragraph of a notice e-mail says, in order; the text and HTML parts are
/// written from it alike.
enum Para {
    Text(String),
    Link(String),
    Lines(Vec<String>),
}

/// The subject of `item`'s e-mail: the notice's title, or for status news that the status
/// of the application for it changed (never which status: that stays behind the login).
fn subject(item: &OutboxItem, title: &str) -> String {
    match &item.news {
        Some(_) => format!("申請の状況が更新されました：{title}"),
        None => title.to_owned(),
    }
}

/// A notice e-mail as a letter from the municipality: a greeting, what kind of notice and
/// what the resident does, the deadline in Japanese form, the link, 問い合わせ先, and how
/// to stop non-critical mail. Nothing about the person: names, amounts and the draft stay
/// behind the login. Status news says only that the application (its number) was updated:
/// not the status, not the office's message, not a field.
fn letter(item: &OutboxItem, title: &str, sender: &str, portal: &str) -> (String, String) {
    let n = &item.notice;
    let mut paras = Vec::new();
    paras.push(Para::Text(if sender.is_empty() {
        "いつもご利用いただきありがとうございます。".to_owned()
    } else {
        format!("{sender}からのお知らせです。")
    }));
    paras.push(Para::Text(match &item.news {
        Some(news) => format!(
            "「{title}」の申請（受付番号 {}）の状況が更新されました。内容はポータルでご確認ください。",
            news.seq
        ),
        None => {
            let what = match &n.application {
                Application::Form => {
                    "申請書は入力済みです。内容を確認して、ポータルから申請してください。"
                }
                Application::Counter { .. } => {
                    "窓口での手続のご案内です。場所とお持ちいただくものは、ポータルでご確認ください。"
                }
                Application::None => "お手続は必要ありません。内容はポータルでご確認ください。",
            };
            format!("あなたあてに「{title}」のお知らせがあります。{what}")
        }
    }));
    if let Some(d) = item.deadline {
        paras.push(Para::Text(format!(
            "期限: {}",
            wording::date(d, DateStyle::Seireki)
        )));
    }
    paras.push(Para::Link(format!(
        "{portal}/notices/{}",
        item.decision_key
    )));
    if let Some(c) = &n.contact {
        let mut lines = vec!["問い合わせ先".to_owned(), c.name.clone()];
        if let Some(phone) = &c.phone {
            lines.push(match &c.hours {
                Some(h) => format!("電話: {phone}（{h}）"),
                None => format!("電話: {phone}"),
            });
        }
        paras.push(Para::Lines(lines));
    }
    let mut closing = "このメールは送信専用です。返信はできません。".to_owned();
    if !n.critical {
        closing.push_str(&format!(
            "このようなお知らせのメールが不要な場合は、ポータルの「通知の設定」（{portal}/preferences）で止められます。"
        ));
    }
    paras.push(Para::Text(closing));

    let text_paras: Vec<String> = paras
        .iter()
        .map(|p| match p {
            Para::Text(t) | Para::Link(t) => t.clone(),
            Para::Lines(l) => l.join("\n"),
        })
        .collect();
    let heading = subject(item, title);
    let text = format!("{heading}\n\n{}", text_paras.join("\n\n"));
    let html_paras: String = paras
        .iter()
        .map(|p| match p {
            Para::Text(t) => format!("<p>{}</p>", escape(t)),
            Para::Link(l) => format!("<p><a href=\"{}\">ポータルで確認する</a></p>", escape(l)),
            Para::Lines(l) => format!(
                "<p>{}</p>",
                l.iter().map(|x| escape(x)).collect::<Vec<_>>().join("<br>")
            ),
        })
        .collect();
    let html = format!(
        "<!doctype html><html lang=\"ja\"><body><p><strong>{}</strong></p>{html_paras}</body></html>",
        escape(&heading)
    );
    (text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_mail_reads_as_a_letter_and_names_no_one() {
        use oshirase_engine::eval::DecisionKey;
        use oshirase_engine::rule::{Category, Contact};
        use oshirase_store::NoticeBody;
        let mut notice = NoticeBody::titled("子ども医療費助成の申請", Category::Childcare, false);
        notice.contact = Some(Contact {
            name: "福祉課 子育て支援係".into(),
            phone: Some("04992-0-0104".into()),
            hours: Some("平日 8時30分から17時15分".into()),
            counter: None,
            url: None,
        });
        let item = OutboxItem {
            id: 1,
            decision_key: DecisionKey::parse("kodomo-iryohi-josei/R1/2026-10-01").unwrap(),
            recipient: "R2".into(),
            channel: "email".into(),
            attempts: 0,
            deadline: Some("2026-10-21".parse().unwrap()),
            news: None,
            notice,
            resident: None,
            preferences: None,
        };
        let (text, html) = letter(
            &item,
            "子ども医療費助成の申請",
            "利島村役場",
            "https://p.example",
        );
        for part in [
            "利島村役場からのお知らせです。",
            "「子ども医療費助成の申請」のお知らせがあります。申請書は入力済みです。",
            "期限: 2026年10月21日（水）",
            "https://p.example/notices/kodomo-iryohi-josei/R1/2026-10-01",
            "問い合わせ先\n福祉課 子育て支援係\n電話: 04992-0-0104（平日 8時30分から17時15分）",
            "「通知の設定」（https://p.example/preferences）で止められます",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(
            html.contains("福祉課 子育て支援係<br>電話: 04992-0-0104"),
            "{html}"
        );
        // A critical notice cannot be stopped, so the mail does not offer it.
        let mut critical = item.clone();
        critical.notice.critical = true;
        critical.notice.application = Application::None;
        let (text, _) = letter(&critical, "t", "", "https://p.example");
        assert!(!text.contains("止められます"), "{text}");
        assert!(text.contains("お手続は必要ありません"), "{text}");
    }

    #[test]
    fn status_news_says_only_that_the_application_was_updated() {
        use oshirase_engine::eval::DecisionKey;
        use oshirase_engine::rule::Category;
        use oshirase_store::{ApplicationNews, ApplicationStatus, NoticeBody};
        let mut notice = NoticeBody::titled("児童手当の認定請求", Category::Childcare, false);
        notice.message.ja = "佐藤 陽さんの児童手当の認定請求です。".into();
        let notice_item = OutboxItem {
            id: 1,
            decision_key: DecisionKey::parse("jidou-teate-nintei/R1/2026-10-01").unwrap(),
            recipient: "R2".into(),
            channel: "email".into(),
            attempts: 0,
            deadline: Some("2026-10-21".parse().unwrap()),
            news: None,
            notice,
            resident: None,
            preferences: None,
        };
        let news = |seq, status| OutboxItem {
            id: 2,
            deadline: None,
            news: Some(ApplicationNews { seq, status }),
            ..notice_item.clone()
        };
        let item = news(12, ApplicationStatus::Returned);
        let title = "児童手当の認定請求";
        assert_eq!(subject(&notice_item, title), title);
        assert_eq!(
            subject(&item, title),
            "申請の状況が更新されました：児童手当の認定請求"
        );
        let (text, html) = letter(&item, title, "利島村役場", "https://p.example");
        for part in [
            "申請の状況が更新されました：児童手当の認定請求\n",
            "「児童手当の認定請求」の申請（受付番号 12）の状況が更新されました。内容はポータルでご確認ください。",
            "https://p.example/notices/jidou-teate-nintei/R1/2026-10-01",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(html.contains("<strong>申請の状況が更新されました：児童手当の認定請求</strong>"));
        for absent in ["差戻し", "returned", "佐藤", "申請書は入力済み", "期限"] {
            assert!(
                !text.contains(absent) && !html.contains(absent),
                "{absent}: {text}"
            );
        }
        // One Message-ID per row: the same on a retry, another for the notice and other news.
        let id = |i: &OutboxItem| message_id(i, "oshirase.example");
        assert_eq!(id(&item), id(&item.clone()));
        assert_ne!(id(&item), id(&notice_item));
        assert_ne!(id(&item), id(&news(12, ApplicationStatus::Received)));
        assert_ne!(id(&item), id(&news(13, ApplicationStatus::Returned)));
        assert!(id(&item).ends_with("@oshirase.example>"), "{}", id(&item));
    }

    #[test]
    fn replies_lose_the_addresses_they_quote() {
        assert_eq!(
            without_addresses("SMTP 550 5.1.1 <ryo94@example.net>: Recipient address rejected"),
            "SMTP 550 5.1.1 <address> Recipient address rejected"
        );
    }

    #[tokio::test]
    async fn bad_smtp_settings_are_clear_errors() {
        let err = |c: SmtpConfig| c.transport().unwrap_err().to_string();
        assert!(err(SmtpConfig::new("http://mail.example.jp")).contains("smtp or smtps"));
        assert!(err(SmtpConfig::new("mail.example.jp:25")).contains("smtp://host:port"));
        assert!(err(SmtpConfig::new("smtp://mail.example.jp?tls=maybe")).contains("tls"));
        let e = err(SmtpConfig::new("smtp://alice@mail.example.jp:587"));
        assert!(e.contains("needs a password"), "{e}");
        let e = err(SmtpConfig {
            user: Some("alice".into()),
            password: Some("pw".into()),
            ..SmtpConfig::new("smtp://bob:secret@mail.example.jp:587")
        });
        assert!(e.contains("both") && !e.contains("secret"), "{e}");
        let e = err(SmtpConfig {
            pool_size: 0,
            ..SmtpConfig::new("smtp://127.0.0.1:2525")
        });
        assert!(e.contains("pool size"), "{e}");
        let shown = format!(
            "{:?}",
            SmtpConfig {
                password: Some("hunter2".into()),
                ..SmtpConfig::new("smtps://u:s3cret@mail.example.jp")
            }
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.jp:587?tls=required",
            "smtps://u:p%40ss@mail.example.jp:465",
        ] {
            SmtpConfig::new(ok).transport().unwrap();
        }
    }

    #[test]
    fn the_transport_needs_a_runtime() {
        let e = SmtpConfig::new("smtp://127.0.0.1:2525")
            .transport()
            .unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
