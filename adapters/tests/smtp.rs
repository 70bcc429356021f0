//! The e-mail channel over SMTP against real servers started here: MailDev receives and
//! parses the notices (read back over its HTTP API); Postfix's smtp-sink rejects, disconnects
//! or stalls on purpose, and the outbox worker settles real SQLite rows from what happened.
//! Both come from `scripts/services/mail.sh`.

#[path = "support/smtp_servers.rs"]
mod smtp_servers;
#[path = "support/smtp_store.rs"]
mod smtp_store;

use oshirase_store::OutboxState;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use oshirase_adapters::email::SmtpConfig;
use oshirase_adapters::{EmailChannel, EmailConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_service::outbox::{Channel, Delivery, Gate, Policy, Worker};
use oshirase_store::{OutboxItem, Store};
use smtp_servers::{free_port, MailDev, SmtpSink};
use smtp_store::{address_of, claim, notice, queue, register, SECRETS};

const PORTAL: &str = "https://portal.example.lg.jp";
const TITLE: &str = "児童手当 認定請求・額改定請求（出生）";

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_noon("2026-10-10".parse().unwrap()))
}

fn config() -> EmailConfig {
    EmailConfig {
        from: "利島村役場 <noreply@example.lg.jp>".parse().unwrap(),
        portal_url: format!("{PORTAL}/"),
        message_id_domain: "oshirase.example.lg.jp".into(),
    }
}

fn smtp_channel(url: &str, store: &Store, clock: Arc<FixedClock>) -> EmailChannel {
    let smtp = SmtpConfig {
        pool_size: 4,
        timeout: Duration::from_secs(2),
        ..SmtpConfig::new(url)
    };
    EmailChannel::smtp(config(), &smtp, store.clone(), clock).unwrap()
}

/// The header `name` of a raw message (unfolded), if present.
fn header(source: &str, name: &str) -> Option<String> {
    let head = source
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in head.lines() {
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(last)) => last.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields.iter().find_map(|f| {
        let (n, v) = f.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// A store with residents R10001 and R10002 (with addresses) and R10003 (without), and one
/// ordinary and one critical notice queued by e-mail.
async fn two_notices(dir: &std::path::Path, now: DateTime<FixedOffset>) -> Store {
    let store = register(dir, 2, 1, now).await;
    queue(
        &store,
        &[notice(1, "R10001", false), notice(2, "R10002", true)],
        now,
    )
    .await;
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildev_receives_short_japanese_notices_through_the_pool() {
    let server = MailDev::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = two_notices(dir.path(), clock.now()).await;
    let items = claim(&store, clock.now()).await;
    assert_eq!(items.len(), 2);
    let ch = Arc::new(smtp_channel(&server.smtp_url(), &store, clock.clone()));
    assert_eq!(ch.health().await, Ok(()));

    // Both rows at once through the pool, then the first row again (a repeat after a crash).
    let mut sends = tokio::task::JoinSet::new();
    for item in items.clone() {
        let ch = ch.clone();
        sends.spawn(async move { ch.send(&item).await });
    }
    while let Some(d) = sends.join_next().await {
        assert_eq!(d.unwrap(), Delivery::Delivered);
    }
    assert_eq!(ch.send(&items[0]).await, Delivery::Delivered);

    let received = server.messages(3).await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let mut ids_of_first = Vec::new();
    for m in &received {
        let to = m["to"][0]["address"].as_str().unwrap();
        let item: &OutboxItem = items
            .iter()
            .find(|i| address_of(&i.recipient) == to)
            .unwrap_or_else(|| panic!("a message to an unknown address {to}"));
        let critical = item.notice.critical;
        assert_eq!(critical, item.recipient == "R10002");
        assert_eq!(m["subject"], TITLE, "MailDev decodes the Japanese subject");
        assert_eq!(m["from"][0]["address"], "noreply@example.lg.jp");
        assert_eq!(m["from"][0]["name"], "利島村役場");
        assert_eq!(m["headers"]["message-id"], ch.message_id(item).as_str());
        // The engine's clock, not the wall clock: noon in Tokyo is 03:00 UTC.
        assert_eq!(m["time"], "2026-10-10T03:00:00.000Z");

        let source = server.source(m["id"].as_str().unwrap()).await;
        let subject = header(&source, "Subject").unwrap();
        assert!(
            subject.is_ascii() && subject.contains("=?utf-8?"),
            "RFC 2047 encoded: {subject}"
        );
        assert_eq!(
            header(&source, "Date").as_deref(),
            Some("Sat, 10 Oct 2026 03:00:00 +0000")
        );
        let content_type = header(&source, "Content-Type").unwrap();
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        assert_eq!(
            header(&source, "List-Unsubscribe"),
            (!critical).then(|| format!("<{PORTAL}/preferences>")),
            "only notices that may be muted offer an unsubscribe link"
        );

        let link = format!("{PORTAL}/notices/{}", item.decision_key);
        let (text, html) = (m["text"].as_str().unwrap(), m["html"].as_str().unwrap());
        assert!(text.contains(TITLE) && text.contains(&link), "{text}");
        assert!(text.contains("期限: 2026年10月21日（水）"), "{text}");
        assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
        for secret in SECRETS {
            assert!(
                !text.contains(secret) && !html.contains(secret),
                "the draft's {secret} leaked"
            );
        }
        if item.id == items[0].id {
            ids_of_first.push(m["headers"]["message-id"].clone());
        }
    }
    assert_eq!(ids_of_first.len(), 2, "the first row went twice");
    assert_eq!(
        ids_of_first[0], ids_of_first[1],
        "a repeat is the same message"
    );
    assert_ne!(ch.message_id(&items[0]), ch.message_id(&items[1]));
    ch.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_delivers_through_maildev_and_skips_nobody() {
    let server = MailDev::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = register(dir.path(), 3, 1, clock.now()).await;
    // R10004 has no address; R09999 is not on the register at all.
    let notices: Vec<_> = ["R10001", "R10002", "R10003", "R10004", "R09999"]
        .iter()
        .enumerate()
        .map(|(n, r)| notice(n, r, n == 1))
        .collect();
    queue(&store, &notices, clock.now()).await;
    let ch = smtp_channel(&server.smtp_url(), &store, clock.clone());
    let policy = Policy {
        gate: Gate::open(),
        ..Policy::default()
    };
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    // R10004 no longer takes e-mail (no address): muted before sending.
    assert_eq!((r.delivered, r.muted, r.dead), (3, 1, 1), "{r:?}");
    let dead = store
        .outbox_rows(Some(oshirase_store::OutboxState::Dead))
        .await
        .unwrap();
    assert_eq!(dead[0].recipient, "R09999");
    let reason = dead[0].last_error.as_deref().unwrap();
    assert!(reason.contains("R09999 has no e-mail address"), "{reason}");
    assert_eq!(server.messages(3).await.len(), 3);
}

/// Sends the first e-mail row of a fresh store to an smtp-sink started with `args`.
async fn send_to_sink(args: &[&str]) -> Delivery {
    let sink = SmtpSink::start(args);
    send_to(&sink.url()).await
}

async fn send_to(url: &str) -> Delivery {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = two_notices(dir.path(), clock.now()).await;
    let item = claim(&store, clock.now()).await.remove(0);
    let ch = smtp_channel(url, &store, clock);
    ch.send(&item).await
}

fn assert_no_address(reason: &str) {
    assert!(
        !reason.contains('@') && !reason.contains("r10001"),
        "the reason names an address: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_reply_is_a_retry_with_the_code_and_text() {
    match send_to_sink(&["-r", "RCPT", "-b", "451 4.3.0 Try again later"]).await {
        Delivery::Retry { after, reason } => {
            assert_eq!(after, None);
            assert!(
                reason.contains("451") && reason.contains("Try again later"),
                "{reason}"
            );
            assert_no_address(&reason);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_reply_is_permanent_without_the_address_it_quotes() {
    let reply = "550 5.1.1 <r10001@example.net>: Recipient address rejected";
    match send_to_sink(&["-f", "RCPT", "-B", reply]).await {
        Delivery::Permanent { reason } => {
            assert!(reason.contains("550"), "{reason}");
            assert!(reason.contains("Recipient address rejected"), "{reason}");
            assert_no_address(&reason);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_a_retry() {
    // smtp-sink hangs up without a reply after DATA.
    match send_to_sink(&["-q", "DATA"]).await {
        Delivery::Retry { reason, .. } => {
            assert!(reason.starts_with("SMTP connection failed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // 421 and hang up (a server shutting down) is a retry too.
    match send_to_sink(&["-Q", "MAIL"]).await {
        Delivery::Retry { reason, .. } => assert!(reason.contains("421"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_retry_and_unhealthy() {
    let url = format!("smtp://127.0.0.1:{}", free_port());
    match send_to(&url).await {
        Delivery::Retry { reason, .. } => {
            assert!(reason.starts_with("SMTP connection failed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let store = register(dir.path(), 1, 0, clock().now()).await;
    let ch = smtp_channel(&url, &store, clock());
    let err = ch.health().await.unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stalls_times_out_as_a_retry() {
    // Replies to RCPT and NOOP come after 6 s; the channel waits 2 s.
    let sink = SmtpSink::start(&["-W", "RCPT:6", "-W", "NOOP:6"]);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = two_notices(dir.path(), clock.now()).await;
    let items = claim(&store, clock.now()).await;
    let ch = smtp_channel(&sink.url(), &store, clock);
    for item in &items {
        let started = std::time::Instant::now();
        match ch.send(item).await {
            Delivery::Retry { reason, .. } => {
                assert_eq!(reason, "SMTP timeout: no reply within 2 s")
            }
            other => panic!("{other:?}"),
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
    let err = ch.health().await.unwrap_err();
    assert!(
        err.to_string().contains("does not answer within 2 s"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_sends_share_pooled_connections() {
    let sink = SmtpSink::start(&["-v"]);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = register(dir.path(), 20, 0, clock.now()).await;
    let notices: Vec<_> = (1..=20)
        .map(|n| notice(n, &format!("R{}", 10000 + n), false))
        .collect();
    queue(&store, &notices, clock.now()).await;
    let ch = smtp_channel(&sink.url(), &store, clock.clone());
    assert_eq!(ch.health().await, Ok(()));
    for item in claim(&store, clock.now()).await {
        assert_eq!(ch.send(&item).await, Delivery::Delivered);
    }
    ch.close().await;
    // smtp-sink logs a session once it ends: wait for the twentieth mail, bounded.
    for _ in 0..100 {
        if sink.sessions_and_mails().1 >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without the pool every message would open its own session (21 with the health check);
    // lettre hands a connection back to the pool in a task of its own, so the send right
    // after may open a second one.
    let (sessions, mails) = sink.sessions_and_mails();
    assert_eq!(mails, 20);
    assert!(sessions <= 3, "{sessions} sessions for {mails} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_settles_rows_from_what_the_server_said() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = two_notices(dir.path(), clock.now()).await;
    let policy = Policy {
        gate: Gate::open(),
        ..Policy::default()
    };
    let rows = |state: OutboxState| {
        let store = store.clone();
        async move { store.outbox_rows(Some(state)).await.unwrap() }
    };

    // 4xx: both rows wait for a retry, with the server's reason.
    let soft = SmtpSink::start(&["-r", "RCPT", "-b", "452 4.2.2 Mailbox full"]);
    let ch = smtp_channel(&soft.url(), &store, clock.clone());
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.retried, r.delivered, r.dead), (2, 0, 0), "{r:?}");
    let pending = rows(OutboxState::Pending).await;
    assert_eq!(pending.len(), 2);
    for row in &pending {
        assert_eq!(row.attempts, 1);
        let reason = row.last_error.as_deref().unwrap();
        assert!(
            reason.contains("452") && reason.contains("Mailbox full"),
            "{reason}"
        );
        assert_no_address(reason);
        assert!(row.next_attempt_at > clock.now());
    }
    ch.close().await;
    drop(soft);

    // Once the backoff has passed, 5xx: dead letters with the server's reason.
    clock.advance(std::time::Duration::from_secs(10 * 60));
    let hard = SmtpSink::start(&["-f", "RCPT", "-B", "554 5.7.1 Relay access denied"]);
    let ch = smtp_channel(&hard.url(), &store, clock.clone());
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.retried, r.delivered, r.dead), (0, 0, 2), "{r:?}");
    for row in rows(OutboxState::Dead).await {
        assert_eq!(row.attempts, 2);
        assert_eq!(
            row.last_error.as_deref(),
            Some("SMTP 554 5.7.1 Relay access denied")
        );
    }
    ch.close().await;
    drop(hard);

    // An operator puts them back; a server that takes mail delivers them.
    assert_eq!(store.retry_outbox(&[], clock.now()).await.unwrap(), 2);
    let ok = SmtpSink::start(&[]);
    let ch = smtp_channel(&ok.url(), &store, clock.clone());
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.delivered, 2, "{r:?}");
    assert_eq!(rows(OutboxState::Delivered).await.len(), 2);
    assert_eq!(store.counts().await.unwrap()["delivery_attempts"], 6);
}

/// A catch-up after the service was down sends notices whose deadline has passed (a late
/// notice still tells the resident what holds), and retries them like any other when the
/// server fails for a while: a week past the deadline 2026-10-21, a 4xx is a retry, not a
/// dead letter, and the retry delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_past_its_deadline_is_retried_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FixedClock::at_noon("2026-10-28".parse().unwrap()));
    let store = two_notices(dir.path(), clock.now()).await;
    let policy = Policy {
        gate: Gate::open(),
        ..Policy::default()
    };
    let soft = SmtpSink::start(&["-r", "RCPT", "-b", "451 4.3.0 Try again later"]);
    let ch = smtp_channel(&soft.url(), &store, clock.clone());
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.retried, r.dead, r.delivered), (2, 0, 0), "{r:?}");
    for row in store.outbox_rows(None).await.unwrap() {
        assert_eq!(row.state, OutboxState::Pending, "{row:?}");
        assert_eq!(row.attempts, 1);
    }
    ch.close().await;
    drop(soft);

    clock.advance(Duration::from_secs(10 * 60));
    let ok = SmtpSink::start(&[]);
    let ch = smtp_channel(&ok.url(), &store, clock.clone());
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.delivered, 2, "{r:?}");
    ch.close().await;
}

/// More than the grace period (14 days) past its deadline a notice is a dead letter that
/// says why, and is not sent: the same whether the server takes mail or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_beyond_the_grace_period_is_a_dead_letter_whether_smtp_is_up_or_not() {
    let policy = Policy {
        gate: Gate::open(),
        ..Policy::default()
    };
    for args in [
        &[][..],
        &["-r", "RCPT", "-b", "451 4.3.0 Try again later"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        // 15 days after the deadline 2026-10-21.
        let clock = Arc::new(FixedClock::at_noon("2026-11-05".parse().unwrap()));
        let store = two_notices(dir.path(), clock.now()).await;
        let sink = SmtpSink::start(&[&["-v"][..], args].concat());
        let ch = smtp_channel(&sink.url(), &store, clock.clone());
        let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
            .drain(&ch)
            .await
            .unwrap();
        assert_eq!(
            (r.dead, r.delivered, r.retried),
            (2, 0, 0),
            "{args:?}: {r:?}"
        );
        for row in store.outbox_rows(None).await.unwrap() {
            assert_eq!(row.state, OutboxState::Dead, "{row:?}");
            let reason = row.last_error.as_deref().unwrap();
            assert!(
                reason.contains("not sent") && reason.contains("2026-10-21"),
                "{reason}"
            );
            assert!(
                reason.contains("2026-11-04"),
                "the last day it would have gone: {reason}"
            );
        }
        ch.close().await;
        assert_eq!(sink.sessions_and_mails().1, 0, "nothing was sent");
    }
}
