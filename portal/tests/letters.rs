//! Notices and drafts as a resident reads them: fields by their labels and kinds, computed
//! values read-only with how they were computed, the person by name, whether and where to
//! apply, and whom to ask.

mod common;

use common::*;
use indexmap::IndexMap;
use oshirase_engine::clock::Clock;
use oshirase_engine::eval::Role;
use oshirase_engine::resident::Channel;
use oshirase_engine::rule::{Application, Category, Contact, FieldKind, FieldSpec, Label};
use reqwest::header::COOKIE;
use serde_json::json;

const FORM: &str = "kodomo-iryohi-josei/R10002/2026-10-01";
const COUNTER: &str = "yobou-bcg/R10002/2026-10-01";
const NONE: &str = "kouki-kanyu/R10001/2026-10-01";

fn spec(label: &str, kind: FieldKind, computed: bool, help: Option<&str>) -> FieldSpec {
    FieldSpec {
        label: Some(Label {
            ja: label.to_owned(),
            en: None,
        }),
        help: help.map(str::to_owned),
        kind,
        choices: Vec::new(),
        computed,
    }
}

fn contact() -> Contact {
    Contact {
        name: "福祉課 子育て支援係".into(),
        phone: Some("04992-0-0104".into()),
        hours: Some("平日 8時30分から17時15分".into()),
        counter: Some("役場本庁舎1階 4番窓口".into()),
        url: None,
    }
}

/// Three more notices of the test day: a form with labelled fields, a procedure at a
/// counter, and one that needs nothing.
async fn letters_app(backend: &str) -> App {
    let app = spawn_app(backend).await;
    let guardian = || vec![recipient("R10003", Role::Guardian, &[Channel::Portal])];
    let mut form = decision(
        "kodomo-iryohi-josei",
        Category::Childcare,
        "R10002",
        "子ども医療費助成の申請",
        guardian(),
        vec![
            ("guardian_name", json!("佐藤 一郎")),
            ("child_name_kana", json!("サトウ ヒナタ")),
            ("child_birth_date", json!("2021-04-10")),
            ("monthly_limit", json!(15000)),
            ("eligible_until", json!("2034-03-31")),
        ],
        &[],
    );
    let mut f = IndexMap::new();
    f.insert(
        "guardian_name".into(),
        spec("保護者の氏名", FieldKind::Person, false, None),
    );
    f.insert(
        "child_name_kana".into(),
        spec("お子さまの氏名（フリガナ）", FieldKind::Kana, false, None),
    );
    f.insert(
        "child_birth_date".into(),
        spec("お子さまの生年月日", FieldKind::Date, false, None),
    );
    f.insert(
        "monthly_limit".into(),
        spec(
            "月額の上限",
            FieldKind::Amount,
            true,
            Some("所得から計算しています"),
        ),
    );
    f.insert(
        "eligible_until".into(),
        spec(
            "助成の対象となる期間の終わり",
            FieldKind::Date,
            true,
            Some("生年月日と、助成の対象年齢から計算しています"),
        ),
    );
    form.form = f;
    form.contact = Some(contact());
    let mut counter = decision(
        "yobou-bcg",
        Category::Vaccination,
        "R10002",
        "BCGの予防接種",
        guardian(),
        vec![("child_name", json!("佐藤 陽"))],
        &[],
    );
    counter.application = Application::Counter {
        place: "保健センター（予約のうえ接種してください）".into(),
        bring: vec!["予診票".into(), "母子健康手帳".into()],
    };
    counter.form.insert(
        "child_name".into(),
        spec("お子さまの氏名", FieldKind::Person, false, None),
    );
    let mut none = decision(
        "kouki-kanyu",
        Category::HealthInsurance,
        "R10001",
        "後期高齢者医療制度の資格取得",
        vec![recipient("R10001", Role::Subject, &[Channel::Portal])],
        vec![],
        &[],
    );
    none.application = Application::None;
    app.store
        .commit_day(
            d("2026-10-01"),
            "test-rules",
            0,
            &[form, counter, none],
            app.clock.now(),
        )
        .await
        .unwrap();
    app
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn a_form_shows_labels_kinds_and_whom_to_ask(backend: &str) {
    let app = letters_app(backend).await;
    let c = app.session_cookie("R10003").await;
    let (_, inbox) = app.page(&c, "/inbox").await;
    assert!(
        inbox.contains("陽さん（お子さま）についてのお知らせ"),
        "{inbox}"
    );
    // Keys in links hold the id; what is read never does.
    assert!(!visible(&inbox).contains("R10002"), "{inbox}");

    let (status, notice) = app.page(&c, &format!("/notices/{FORM}")).await;
    assert_eq!(status, 200);
    for part in [
        "問い合わせ先",
        "福祉課 子育て支援係",
        "電話: 04992-0-0104",
        "id=\"open-draft\"",
    ] {
        assert!(notice.contains(part), "{part} in {notice}");
    }
    let (status, draft) = app.page(&c, &format!("/drafts/{FORM}")).await;
    assert_eq!(status, 200);
    for part in [
        ">お子さまの氏名（フリガナ）</label>",
        "type=\"date\"",
        "name=\"field.child_birth_date\" value=\"2021-04-10\"",
        // Computed: shown as a notice writes it, with how, and not a form field.
        "2034年3月31日（金）",
        "15,000円",
        "生年月日と、助成の対象年齢から計算しています",
        "問い合わせ先",
        "電話: 04992-0-0104",
    ] {
        assert!(draft.contains(part), "{part} in {draft}");
    }
    for raw in [
        "field.eligible_until",
        "field.monthly_limit",
        ">guardian_name<",
        ">child_name_kana<",
    ] {
        assert!(!draft.contains(raw), "{raw} in {draft}");
    }
    // Corrections are checked by kind, and computed values cannot be changed at all.
    let token = csrf(&draft);
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut form = vec![("csrf", token.clone()), ("action", "submit".to_owned())];
        form.extend(fields.into_iter().map(|(k, v)| (k, v.to_owned())));
        app.http
            .post(format!("{}/drafts/{FORM}", app.base))
            .header(COOKIE, c.clone())
            .form(&form)
            .send()
    };
    for (field, value, why) in [
        ("field.child_name_kana", "さとう ひなた", "katakana"),
        ("field.child_birth_date", "2021-13-01", "YYYY-MM-DD"),
        ("field.eligible_until", "2040-03-31", "computed"),
        ("field.monthly_limit", "99999", "computed"),
    ] {
        let r = post(vec![(field, value)]).await.unwrap();
        assert_eq!(r.status(), 422, "{field}");
        let body = r.text().await.unwrap();
        assert!(body.contains(why), "{field}: {body}");
    }
    let r = post(vec![
        ("field.child_name_kana", "サトウ ヒナタ"),
        ("field.child_birth_date", "2021-04-11"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    // The API gives the same labels and kinds.
    let (_, d) = App::json(
        app.get("R10003", &format!("/api/drafts/{}", enc(FORM)))
            .await,
    )
    .await;
    assert_eq!(
        d["form"]["child_name_kana"]["label"]["ja"],
        "お子さまの氏名（フリガナ）"
    );
    assert_eq!(d["form"]["child_name_kana"]["kind"], "kana");
    assert_eq!(d["form"]["monthly_limit"]["computed"], true);
    app.shutdown().await;
}
on_both!(form_letters, a_form_shows_labels_kinds_and_whom_to_ask);

async fn counters_and_notices_without_an_application(backend: &str) {
    let app = letters_app(backend).await;
    let c = app.session_cookie("R10003").await;
    let (_, notice) = app.page(&c, &format!("/notices/{COUNTER}")).await;
    for part in [
        "手続の方法",
        "保健センター（予約のうえ接種してください）",
        "<li>母子健康手帳</li>",
        "印刷用",
    ] {
        assert!(notice.contains(part), "{part} in {notice}");
    }
    assert!(!notice.contains("申請書を確認する"), "{notice}");
    let (status, draft) = app.page(&c, &format!("/drafts/{COUNTER}")).await;
    assert_eq!(status, 200);
    assert!(
        draft.contains("id=\"counter-sheet\"") && draft.contains("佐藤 陽"),
        "{draft}"
    );
    assert!(
        !draft.contains("この内容で申請する") && !draft.contains("<input type=\"text\""),
        "{draft}"
    );
    // Nothing is submitted for a procedure done at the counter.
    let (status, body) = App::json(
        app.post(
            "R10003",
            &format!("/api/drafts/{}/submit", enc(COUNTER)),
            Some(json!({"corrections": {}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = App::json(
        app.post(
            "R10003",
            &format!("/api/drafts/{}/decline", enc(COUNTER)),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);

    let c = app.session_cookie("R10001").await;
    let (status, notice) = app.page(&c, &format!("/notices/{NONE}")).await;
    assert_eq!(status, 200);
    assert!(notice.contains("お手続は必要ありません"), "{notice}");
    assert!(
        !notice.contains("open-draft") && !notice.contains("申請書を確認する"),
        "{notice}"
    );
    assert!(notice.contains("ご本人あてのお知らせ"), "{notice}");
    // No draft was made for it.
    let (status, _) = App::json(
        app.get("R10001", &format!("/api/drafts/{}", enc(NONE)))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    app.shutdown().await;
}
on_both!(counter_letters, counters_and_notices_without_an_application);

/// The real catalogue over the fixture town for a month: every notice and draft page every
/// reader opens names people, procedures and fields in words, never by register id, rule
/// id or field name, and writes dates as a notice does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_towns_pages_show_no_raw_ids_or_field_names() {
    use std::collections::BTreeSet;
    let town = Town::new("2026-10-01").await;
    let mut readers: BTreeSet<String> = BTreeSet::new();
    let mut day = d("2026-04-01");
    while day <= d("2026-04-30") {
        for dec in &town.decide(day).await {
            for r in dec
                .recipients
                .iter()
                .filter(|r| r.channels.contains(&Channel::Portal))
            {
                readers.insert(r.id.to_string());
            }
        }
        day = oshirase_engine::calendar::day_after(day);
    }
    assert!(readers.len() >= 10, "{readers:?}");
    let rule_ids: Vec<String> = town
        .rules
        .rules()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    let field_names: BTreeSet<String> = town
        .rules
        .rules()
        .iter()
        .flat_map(|r| r.form.keys().cloned())
        .filter(|n| n.contains('_'))
        .collect();
    let app = town.serve().await;
    let mut pages = 0;
    for reader in &readers {
        let c = app.session_cookie(reader).await;
        let (_, inbox) = app.page(&c, "/inbox").await;
        let mut paths = vec!["/inbox".to_owned()];
        let mut rest = inbox.as_str();
        while let Some(at) = rest.find("href=\"/notices/") {
            let tail = &rest[at + 6..];
            let path = &tail[..tail.find('"').unwrap()];
            paths.push(path.to_owned());
            paths.push(path.replacen("/notices/", "/drafts/", 1));
            rest = tail;
        }
        for path in paths {
            let (status, html) = app.page(&c, &path).await;
            if path.starts_with("/drafts/") && status == 404 {
                continue; // a notice with nothing to apply for has no draft
            }
            assert_eq!(status, 200, "{reader} {path}");
            pages += 1;
            let text = visible(&html);
            let raw_id = text.char_indices().find(|(i, c)| {
                *c == 'R'
                    && text[i + 1..]
                        .chars()
                        .take(5)
                        .filter(char::is_ascii_digit)
                        .count()
                        == 5
            });
            assert!(raw_id.is_none(), "{reader} {path}: a register id in {text}");
            for id in &rule_ids {
                assert!(
                    !text.contains(id.as_str()),
                    "{reader} {path}: rule id {id} in {text}"
                );
            }
            for name in &field_names {
                assert!(
                    !text.contains(name.as_str()),
                    "{reader} {path}: field {name} in {text}"
                );
            }
            assert!(
                oshirase_engine::wording::machine_written(&text).is_none(),
                "{reader} {path}: {:?} in {text}",
                oshirase_engine::wording::machine_written(&text)
            );
        }
    }
    assert!(pages >= 30, "only {pages} pages");
    app.shutdown().await;
}

/// A death's notices come together under the event in the inbox: the おくやみ案内 (nothing
/// to apply for) first, then what is urgent, then by deadline.
async fn a_life_event_reads_as_one_story(backend: &str) {
    let app = spawn_app(backend).await;
    let survivor = || vec![recipient("R10008", Role::Survivor, &[Channel::Portal])];
    let event = "death-R10007-2026-09-30";
    let notice = |rule: &str, title: &str, deadline: Option<&str>, urgent: bool| {
        let mut n = decision(
            rule,
            Category::Bereavement,
            "R10007",
            title,
            survivor(),
            vec![],
            &[],
        );
        n.key =
            oshirase_engine::eval::DecisionKey::parse(&format!("{rule}/R10007/{event}")).unwrap();
        n.event_id = Some(event.to_owned());
        n.deadline = deadline.map(|d| d.parse().unwrap());
        n.urgent = urgent;
        n
    };
    let mut guide = notice("shiboujou-ikkatsu-annai", "おくやみ案内", None, false);
    guide.application = Application::None;
    let day = [
        notice(
            "kokuho-soshitsu",
            "国民健康保険の資格喪失",
            Some("2026-10-14"),
            false,
        ),
        notice(
            "setainushi-henko",
            "世帯主変更の届出",
            Some("2026-10-14"),
            true,
        ),
        guide,
        notice(
            "mishikyu-nenkin",
            "未支給年金の請求",
            Some("2031-09-30"),
            false,
        ),
        notice(
            "kouki-soshitsu",
            "後期高齢者医療の資格喪失",
            Some("2026-10-13"),
            false,
        ),
    ];
    app.store
        .commit_day(d("2026-10-01"), "test-rules", 0, &day, app.clock.now())
        .await
        .unwrap();
    let c = app.session_cookie("R10008").await;
    let (_, inbox) = app.page(&c, "/inbox").await;
    let heading = "故 伊藤 五郎さんについて：ご逝去に伴うお手続";
    assert_eq!(inbox.matches(heading).count(), 1, "{inbox}");
    assert_eq!(
        inbox.matches("心よりお悔やみ申し上げます。").count(),
        1,
        "{inbox}"
    );
    let at = |title: &str| {
        inbox
            .find(&format!(">{title}</a>"))
            .unwrap_or_else(|| panic!("{title} in {inbox}"))
    };
    let order = [
        at("おくやみ案内"),
        at("世帯主変更の届出"),
        at("後期高齢者医療の資格喪失"),
        at("国民健康保険の資格喪失"),
        at("未支給年金の請求"),
    ];
    assert!(inbox.find(heading).unwrap() < order[0], "{inbox}");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?} in {inbox}"
    );
    assert!(inbox.contains("至急"), "{inbox}");
    // The fixture's own 葬祭費 notice is of no event: it stands apart, under the person.
    assert!(
        inbox.contains("故 伊藤 五郎さんについてのお知らせ</h2>"),
        "{inbox}"
    );
    app.shutdown().await;
}
on_both!(life_event, a_life_event_reads_as_one_story);
