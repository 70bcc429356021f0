//! What issuing the data a resident shares costs, and checking a party's DPoP proof, each
//! beside its floor measured in the same run, on one core.
//!
//! sdjwt:    `sdjwt::issue` of 10 items (Japanese values), each a Disclosure with a fresh
//!           128-bit salt, bound to a holder key, with a status-list entry.
//! floor:    one plain ES256 JWT of the same claims in clear, signed with the same key
//!           (`SigningKey::sign`): the signature that any signed extract costs.
//! dpop:     `dpop::verify` of a proof with `ath` (header and claims parsed, the key built
//!           from its jwk, the signature, the checks, the RFC 7638 thumbprint).
//! floor:    one ES256 signature verification of the same proof with a ready key.
//!
//! `cargo bench --bench sdjwt` times each for 2 s (OSHIRASE_BENCH_SECONDS to change) and
//! prints the rates and ratios, then criterion's per-call figures; `cargo test --benches`
//! runs each a few times, checking what they make, never timing.

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use oshirase_exchange::sdjwt::{self, Issue};
use oshirase_exchange::{dpop, SigningKey};
use serde_json::{json, Value};

const NOW: i64 = 1_790_000_000;
const URL: &str = "https://exchange.example.lg.jp/share/v1/data";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJjbmYiOnsiamt0IjoiLi4uIn19.c2ln";

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn seconds() -> f64 {
    std::env::var("OSHIRASE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0)
}

fn items() -> Vec<(String, Value)> {
    [
        ("shimei", json!("山田 花子")),
        ("shimei_kana", json!("ヤマダ ハナコ")),
        ("jusho", json!("東京都千代田区霞が関一丁目1番1号 霞ビル301")),
        ("seinengappi", json!("1990-04-01")),
        ("seibetsu", json!("女")),
        ("setainushi", json!("山田 太郎")),
        ("zokugara", json!("妻")),
        ("honseki", json!("京都府京都市左京区")),
        ("tennyu_bi", json!("2021-10-15")),
        ("setai_ninzu", json!(3)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The public members of a key's JWK, as a party sends it.
fn public(key: &SigningKey) -> Value {
    let j = key.public_jwk();
    json!({"kty": j["kty"], "crv": j["crv"], "x": j["x"], "y": j["y"]})
}

struct Fixture {
    key: SigningKey,
    holder: SigningKey,
    holder_jwk: Value,
    items: Vec<(String, Value)>,
    proof: String,
    proof_key: DecodingKey,
}

impl Fixture {
    fn new() -> Fixture {
        let key = SigningKey::generate().expect("key");
        let holder = SigningKey::generate().expect("key");
        let holder_jwk = public(&holder);
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": holder_jwk});
        let claims = json!({
            "jti": "Zq0vK3dN5sH2", "htm": "GET", "htu": URL, "iat": NOW,
            "ath": dpop::access_token_hash(TOKEN),
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let encoding = EncodingKey::from_ec_pem(holder.to_pem().as_bytes()).expect("pem");
        let sig = jsonwebtoken::crypto::sign(signed.as_bytes(), &encoding, Algorithm::ES256)
            .expect("sign");
        let x = holder_jwk["x"].as_str().expect("x");
        let y = holder_jwk["y"].as_str().expect("y");
        Fixture {
            proof_key: DecodingKey::from_ec_components(x, y).expect("point"),
            proof: format!("{signed}.{sig}"),
            key,
            holder,
            holder_jwk,
            items: items(),
        }
    }

    fn issue(&self) -> String {
        sdjwt::issue(
            &self.key,
            &Issue {
                issuer: "https://city.example.lg.jp",
                vct: "urn:oshirase:resident-extract:1",
                subject_pseudonym: Some("pp-3f9c1e"),
                items: &self.items,
                holder_jwk: &self.holder_jwk,
                issued_at: NOW,
                expires_at: NOW + 600,
                status: Some((1207, "https://city.example.lg.jp/status/extracts/1")),
            },
        )
        .expect("issue")
    }

    /// The floor: the same claims in clear, one signature.
    fn plain(&self) -> String {
        let mut claims = json!({
            "iss": "https://city.example.lg.jp", "sub": "pp-3f9c1e",
            "iat": NOW, "exp": NOW + 600, "vct": "urn:oshirase:resident-extract:1",
            "cnf": {"jwk": self.holder_jwk},
            "status": {"status_list": {"idx": 1207, "uri": "https://city.example.lg.jp/status/extracts/1"}},
        });
        for (name, value) in &self.items {
            claims[name] = value.clone();
        }
        self.key.sign("JWT", &claims)
    }

    fn dpop(&self) -> dpop::Proof {
        dpop::verify(&self.proof, "GET", URL, NOW, Some(TOKEN)).expect("proof")
    }

    fn es256_verify(&self) -> bool {
        let (signed, sig) = self.proof.rsplit_once('.').expect("a JWS");
        jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &self.proof_key, Algorithm::ES256)
            .expect("verify")
    }

    /// What the benchmark times is right.
    fn check(&self) {
        let jwks = json!({"keys": [self.key.public_jwk()]});
        let verified = sdjwt::verify(&self.issue(), &jwks, NOW).expect("verifies");
        assert_eq!(verified.claims, self.items);
        assert!(self.plain().starts_with("eyJ"));
        assert_eq!(self.dpop().jkt, self.holder.kid());
        assert!(self.es256_verify());
    }
}

/// Calls per second of `f` on this thread, for about `secs`.
fn rate<T>(secs: f64, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..50 {
        black_box(f());
    }
    let budget = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        for _ in 0..20 {
            black_box(f());
        }
        n += 20;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn summary(fx: &Fixture) {
    let secs = seconds();
    // Each measured twice, interleaved, the better kept: the machine is shared.
    let (mut issue, mut plain, mut dp, mut floor) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..2 {
        issue = issue.max(rate(secs / 2.0, || fx.issue()));
        plain = plain.max(rate(secs / 2.0, || fx.plain()));
        dp = dp.max(rate(secs / 2.0, || fx.dpop()));
        floor = floor.max(rate(secs / 2.0, || fx.es256_verify()));
    }
    let len = fx.issue().len();
    println!(
        "sdjwt: {issue:.0} issues/s on one core (floor: one plain ES256 JWT of the same claims {plain:.0}/s, ratio {:.2}) — 10 items, {len} bytes; target ≥ 2,000/s: {}",
        issue / plain,
        if issue >= 2000.0 { "PASS" } else { "MISS" }
    );
    println!(
        "dpop: {dp:.0} verifications/s on one core (floor: one ES256 signature verification {floor:.0}/s, ratio {:.2}); {:.1} µs vs {:.1} µs",
        dp / floor,
        1e6 / dp,
        1e6 / floor
    );
}

fn bench(c: &mut Criterion) {
    let fx = Fixture::new();
    fx.check();
    if bench_mode() {
        summary(&fx);
    }
    let mut g = c.benchmark_group("sdjwt");
    g.sample_size(20);
    g.bench_function("issue_10_items", |b| b.iter(|| black_box(fx.issue())));
    g.bench_function("plain_es256_jwt_floor", |b| {
        b.iter(|| black_box(fx.plain()))
    });
    g.finish();
    let mut g = c.benchmark_group("dpop");
    g.sample_size(20);
    g.bench_function("verify", |b| b.iter(|| black_box(fx.dpop())));
    g.bench_function("es256_verify_floor", |b| {
        b.iter(|| black_box(fx.es256_verify()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
