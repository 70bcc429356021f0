#!/usr/bin/env python3
"""An independent verifier of the SD-JWTs we issue (RFC 9901), and an independent maker of
DPoP proofs (RFC 9449), written with `jwcrypto` only (it shares no code with oshirase). The
Rust test (exchange/tests/sdjwt.rs) runs it:

    python3 sdjwt_verify.py --jwks=issuer.jwks --sd-jwt=issued.txt --holder-key=holder.pem \
        --now=UNIX --aud=https://party.example --nonce=N

checks the issuer's signature against the key of the JWK Set named by `kid`, the header's
`typ` (dc+sd-jwt), `exp` against --now, `_sd_alg`, and that every Disclosure's digest is in
`_sd`; then, as the holder, presents it with a key-binding JWT (`typ: kb+jwt`; `aud`,
`nonce`, `iat`, `sd_hash`) signed with the holder's key, and verifies that presentation as
a verifier would, with `cnf.jwk`. It prints one JSON object, {"ok": true, "claims": {...},
"kb_ok": true, "payload": {...}}, or {"ok": false, "error": "..."} with exit status 2 when
it refuses.

    python3 sdjwt_verify.py --dpop POST https://exchange.example/token --holder-key=holder.pem \
        --now=UNIX [--ath=ACCESS_TOKEN]

prints {"proof": "<DPoP proof JWT>", "thumbprint": "<jwcrypto's RFC 7638 thumbprint>"}.

Exit status 3 when a package is missing: run scripts/services/agency.sh.
"""

import argparse
import base64
import hashlib
import json
import sys
import uuid

try:
    from jwcrypto import jwk, jws, jwt
except ImportError as e:  # pragma: no cover - the Rust test reports this
    print(f"sdjwt_verify.py: {e}: run scripts/services/agency.sh", file=sys.stderr, flush=True)
    sys.exit(3)

SKEW = 60


class Refused(Exception):
    pass


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_b64(text):
    return b64url(hashlib.sha256(text.encode("ascii")).digest())


def verify_issued(jwks_text, sd_jwt, now):
    """The issuer-signed JWT and the Disclosures: (payload, claims)."""
    parts = sd_jwt.split("~")
    if len(parts) < 2 or parts[-1] != "":
        raise Refused("not an SD-JWT without key binding (must end with ~)")
    issuer_jwt, disclosures = parts[0], parts[1:-1]
    token = jws.JWS()
    try:
        token.deserialize(issuer_jwt)
    except Exception as e:
        raise Refused(f"malformed issuer-signed JWT: {e}")
    header = token.jose_header
    if header.get("typ") != "dc+sd-jwt":
        raise Refused(f"typ: {header.get('typ')!r}")
    if header.get("alg") != "ES256":
        raise Refused(f"alg: {header.get('alg')!r}")
    keys = jwk.JWKSet.from_json(jwks_text)
    key = keys.get_key(header.get("kid"))
    if key is None:
        raise Refused(f"signature: no key with kid {header.get('kid')!r}")
    try:
        token.verify(key, alg="ES256")
    except Exception as e:
        raise Refused(f"signature: {e}")
    payload = json.loads(token.payload)
    exp = payload.get("exp")
    if not isinstance(exp, int) or exp <= now:
        raise Refused(f"expired: exp {exp} at {now}")
    if payload.get("_sd_alg", "sha-256") != "sha-256":
        raise Refused(f"_sd_alg: {payload.get('_sd_alg')!r}")
    sd = payload.get("_sd")
    if not isinstance(sd, list):
        raise Refused("no _sd array")
    claims = {}
    seen = set()
    for d in disclosures:
        digest = sha256_b64(d)
        if digest not in sd:
            raise Refused(f"undisclosed: the digest of a disclosure is not in _sd ({digest})")
        if digest in seen:
            raise Refused("a disclosure is given twice")
        seen.add(digest)
        decoded = json.loads(b64url_decode(d).decode("utf-8"))
        if not (isinstance(decoded, list) and len(decoded) == 3):
            raise Refused("a disclosure is not [salt, name, value]")
        salt, name, value = decoded
        if not isinstance(salt, str) or len(b64url_decode(salt)) < 16:
            raise Refused("a salt is not 128 bits of base64url")
        if name in ("_sd", "...") or name in payload or name in claims:
            raise Refused(f"claim {name!r} repeated")
        claims[name] = value
    return payload, claims


def present(sd_jwt, holder, aud, nonce, now):
    """The holder's presentation: every disclosure and a key-binding JWT."""
    kb = jwt.JWT(
        header={"typ": "kb+jwt", "alg": "ES256"},
        claims={"iat": now, "aud": aud, "nonce": nonce, "sd_hash": sha256_b64(sd_jwt)},
    )
    kb.make_signed_token(holder)
    return sd_jwt + kb.serialize()


def verify_presentation(presentation, payload, aud, nonce, now):
    """As a verifier: the KB-JWT against cnf.jwk, its claims, and sd_hash."""
    head, _, kb_jwt = presentation.rpartition("~")
    cnf = payload.get("cnf", {}).get("jwk")
    if not cnf:
        raise Refused("no cnf.jwk")
    holder = jwk.JWK(**cnf)
    token = jws.JWS()
    token.deserialize(kb_jwt)
    if token.jose_header.get("typ") != "kb+jwt":
        raise Refused("kb typ")
    try:
        token.verify(holder, alg="ES256")
    except Exception as e:
        raise Refused(f"key binding signature: {e}")
    kb = json.loads(token.payload)
    if kb.get("aud") != aud or kb.get("nonce") != nonce:
        raise Refused("key binding aud or nonce")
    if abs(kb.get("iat", 0) - now) > SKEW:
        raise Refused("key binding iat")
    if kb.get("sd_hash") != sha256_b64(head + "~"):
        raise Refused("key binding sd_hash")
    return True


def dpop(htm, htu, holder, now, ath):
    public = holder.export_public(as_dict=True)
    claims = {"jti": str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": now}
    if ath is not None:
        claims["ath"] = sha256_b64(ath)
    proof = jwt.JWT(header={"typ": "dpop+jwt", "alg": "ES256", "jwk": public}, claims=claims)
    proof.make_signed_token(holder)
    return {"proof": proof.serialize(), "thumbprint": holder.thumbprint()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jwks")
    p.add_argument("--sd-jwt")
    p.add_argument("--holder-key", required=True)
    p.add_argument("--now", type=int, required=True)
    p.add_argument("--aud", default="https://party.example")
    p.add_argument("--nonce", default="n-0")
    p.add_argument("--dpop", nargs=2, metavar=("HTM", "HTU"))
    p.add_argument("--ath")
    args = p.parse_args()
    with open(args.holder_key, "rb") as f:
        holder = jwk.JWK.from_pem(f.read())

    if args.dpop:
        print(json.dumps(dpop(args.dpop[0], args.dpop[1], holder, args.now, args.ath)))
        return 0

    if not args.jwks or not args.sd_jwt:
        p.error("--jwks and --sd-jwt (or --dpop)")
    with open(args.jwks) as f:
        jwks_text = f.read()
    with open(args.sd_jwt) as f:
        sd_jwt = f.read().strip()
    try:
        payload, claims = verify_issued(jwks_text, sd_jwt, args.now)
        presentation = present(sd_jwt, holder, args.aud, args.nonce, args.now)
        kb_ok = verify_presentation(presentation, payload, args.aud, args.nonce, args.now)
    except Refused as e:
        print(json.dumps({"ok": False, "error": str(e)}, ensure_ascii=False))
        return 2
    out = {"ok": True, "claims": claims, "kb_ok": kb_ok, "payload": payload}
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
