//! What we issue as an SD-JWT, checked by an independent verifier (Python `jwcrypto`,
//! tests/sdjwt_verify.py) that also presents it as the holder, with a key-binding JWT; and
//! DPoP proofs made by that independent implementation, accepted by `dpop::verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use oshirase_exchange::sdjwt::{self, Issue};
use oshirase_exchange::{dpop, Keys, SigningKey};
use serde_json::{json, Value};

/// The test's clock (Unix seconds): 2026-09-21T14:13:20Z.
const NOW: i64 = 1_790_000_000;
const LIFETIME: i64 = 600;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdjwt_verify.py")
}

/// Runs the independent script; its exit status and the JSON it printed.
fn run(args: &[String]) -> (i32, Value) {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): run scripts/services/agency.sh"));
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code,
        3,
        "sdjwt_verify.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sdjwt_verify.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn ten_items() -> Vec<(String, Value)> {
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

/// The files the script reads: the issuer's JWK Set, the SD-JWT, the holder's key.
struct Files {
    _dir: tempfile::TempDir,
    jwks: PathBuf,
    sd_jwt: PathBuf,
    holder: PathBuf,
}

impl Files {
    fn new(jwks: &Value, sd_jwt: &str, holder: &SigningKey) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = Files {
            jwks: dir.path().join("issuer.jwks"),
            sd_jwt: dir.path().join("issued.sd-jwt"),
            holder: dir.path().join("holder.pem"),
            _dir: dir,
        };
        std::fs::write(&files.jwks, jwks.to_string()).unwrap();
        std::fs::write(&files.sd_jwt, sd_jwt).unwrap();
        std::fs::write(&files.holder, holder.to_pem()).unwrap();
        files
    }

    fn verify_at(&self, now: i64) -> (i32, Value) {
        run(&[
            format!("--jwks={}", self.jwks.display()),
            format!("--sd-jwt={}", self.sd_jwt.display()),
            format!("--holder-key={}", self.holder.display()),
            format!("--now={now}"),
            "--aud=https://party.example".into(),
            "--nonce=n-5b2d0c".into(),
        ])
    }
}

fn issue(key: &SigningKey, holder: &SigningKey, items: &[(String, Value)]) -> String {
    // The holder's key as it comes in a DPoP proof: the public members only.
    let j = holder.public_jwk();
    let jwk = json!({"kty": j["kty"], "crv": j["crv"], "x": j["x"], "y": j["y"]});
    sdjwt::issue(
        key,
        &Issue {
            issuer: "https://city.example.lg.jp",
            vct: "urn:oshirase:resident-extract:1",
            subject_pseudonym: Some("pp-3f9c1e"),
            items,
            holder_jwk: &jwk,
            issued_at: NOW,
            expires_at: NOW + LIFETIME,
            status: Some((1207, "https://city.example.lg.jp/status/extracts/1")),
        },
    )
    .unwrap()
}

fn refused(report: (i32, Value), why: &str) {
    let (code, report) = report;
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.starts_with(why), "{why}: {error}");
}

#[test]
fn an_independent_verifier_gets_the_ten_items_and_the_holder_binds_them() {
    let keys = Keys {
        current: SigningKey::generate().unwrap(),
        previous: vec![SigningKey::generate().unwrap()],
    };
    let holder = SigningKey::generate().unwrap();
    let items = ten_items();
    let sd_jwt = issue(&keys.current, &holder, &items);
    let files = Files::new(&keys.jwks(), &sd_jwt, &holder);
    let (code, report) = files.verify_at(NOW + 30);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["kb_ok"], true);
    let claims = report["claims"].as_object().unwrap();
    assert_eq!(claims.len(), 10);
    for (name, value) in &items {
        assert_eq!(claims.get(name), Some(value), "{name}");
    }
    let payload = &report["payload"];
    assert_eq!(payload["iss"], "https://city.example.lg.jp");
    assert_eq!(payload["vct"], "urn:oshirase:resident-extract:1");
    assert_eq!(payload["cnf"]["jwk"]["x"], holder.public_jwk()["x"]);
    assert_eq!(payload["status"]["status_list"]["idx"], 1207);
    // Our own verifier agrees.
    let ours = sdjwt::verify(&sd_jwt, &keys.jwks(), NOW + 30).unwrap();
    assert_eq!(ours.claims, items);
}

#[test]
fn a_tampered_disclosure_is_reported() {
    let key = SigningKey::generate().unwrap();
    let holder = SigningKey::generate().unwrap();
    let sd_jwt = issue(&key, &holder, &ten_items());
    // The name changed in one disclosure, salt kept: its digest is no longer in _sd.
    let parsed = sdjwt::parse(&sd_jwt).unwrap();
    let d = &parsed.disclosures[0];
    let forged = base64_json(&json!([d.salt, d.name, "別人 次郎"]));
    let tampered = sd_jwt.replacen(&d.encoded, &forged, 1);
    assert_ne!(tampered, sd_jwt);
    let jwks = json!({"keys": [key.public_jwk()]});
    refused(
        Files::new(&jwks, &tampered, &holder).verify_at(NOW),
        "undisclosed",
    );
}

fn base64_json(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn an_expired_one_is_refused() {
    let key = SigningKey::generate().unwrap();
    let holder = SigningKey::generate().unwrap();
    let sd_jwt = issue(&key, &holder, &ten_items());
    let files = Files::new(&json!({"keys": [key.public_jwk()]}), &sd_jwt, &holder);
    assert_eq!(files.verify_at(NOW + LIFETIME - 1).0, 0);
    refused(files.verify_at(NOW + LIFETIME), "expired");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let holder = SigningKey::generate().unwrap();
    let sd_jwt = issue(&other, &holder, &ten_items());
    // Signed by a key the set does not have.
    let jwks = json!({"keys": [key.public_jwk()]});
    refused(
        Files::new(&jwks, &sd_jwt, &holder).verify_at(NOW),
        "signature",
    );
    // Our kid on the other key's signature: the signature itself fails.
    let mut posing = other.public_jwk();
    posing["x"] = key.public_jwk()["x"].clone();
    posing["y"] = key.public_jwk()["y"].clone();
    let jwks = json!({"keys": [posing]});
    refused(
        Files::new(&jwks, &sd_jwt, &holder).verify_at(NOW),
        "signature",
    );
}

#[test]
fn a_holder_without_the_bound_key_cannot_present() {
    let key = SigningKey::generate().unwrap();
    let holder = SigningKey::generate().unwrap();
    let thief = SigningKey::generate().unwrap();
    let sd_jwt = issue(&key, &holder, &ten_items());
    let files = Files::new(&json!({"keys": [key.public_jwk()]}), &sd_jwt, &thief);
    refused(files.verify_at(NOW), "key binding signature");
}

#[test]
fn dpop_proofs_made_by_jwcrypto_verify_with_its_thumbprint() {
    let dir = tempfile::tempdir().unwrap();
    let holder = SigningKey::generate().unwrap();
    let pem = dir.path().join("holder.pem");
    std::fs::write(&pem, holder.to_pem()).unwrap();
    let url = "https://exchange.example.lg.jp/share/v1/data";
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJjbmYiOnt9fQ.c2lnbmF0dXJl";
    // Several: OpenSSL's signatures have either half of s, and all must pass.
    for _ in 0..4 {
        let (code, made) = run(&[
            "--dpop".into(),
            "GET".into(),
            url.into(),
            format!("--holder-key={}", pem.display()),
            format!("--now={NOW}"),
            format!("--ath={token}"),
        ]);
        assert_eq!(code, 0, "{made}");
        let proof = made["proof"].as_str().unwrap();
        let p = dpop::verify(proof, "GET", url, NOW + 2, Some(token)).unwrap();
        assert_eq!(p.jkt, made["thumbprint"].as_str().unwrap());
        assert_eq!(p.jkt, holder.kid());
        assert_eq!(dpop::thumbprint(&p.jwk).unwrap(), p.jkt);
        assert_eq!(
            dpop::verify(proof, "POST", url, NOW, Some(token)),
            Err(dpop::DpopError::Method)
        );
    }
}
