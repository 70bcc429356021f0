#!/usr/bin/env python3
"""A private party (an employer's payroll software) that a resident shares data with, written
with libraries that share no code with oshirase: `authlib` for the OAuth 2.0 code flow (PKCE
S256, `authorization_details`, `private_key_jwt`), `jwcrypto` for its DPoP proofs and, through
sdjwt_verify.py, for verifying the SD-JWT it receives. The Rust test (tests/sharing.rs) runs:

    python3 share_party.py flow --api=URL --client=ID --client-key=PEM --kid=KID \
        --holder-key=PEM --redirect=URI --cookie='oshirase_session=…' --untick=birth_date \
        --state-file=F

which discovers the endpoints from the authorization server's metadata (RFC 8414, at
URL/.well-known/oauth-authorization-server), acts as the resident's browser too (their session cookie, the consent form posted
with one optional item unticked), takes the code from the redirect, gets a DPoP-bound token,
fetches the data, verifies the SD-JWT (issuer signature by the JWKS, disclosures, expiry, key
binding to its DPoP key) and tries the attacks (the code again, a wrong code_verifier, a token
without its DPoP key, a proof used twice). It prints one JSON report and keeps the access
token in F. Then

    python3 share_party.py fetch --api=URL --holder-key=PEM --state-file=F

asks for the data again with that token (after a revocation: refused), and

    python3 share_party.py set --api=URL --holder-key=PEM --state-file=F --set-file=S --aud=ID

verifies a Security Event Token the party received (its signature by the JWKS, `typ`,
`aud`, the grant-revoked event) and prints the grant it revokes.

Exit status 3 when a package is missing: run scripts/services/agency.sh.
"""

import argparse
import html.parser
import json
import os
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import requests
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey
    from jwcrypto import jwk, jwt

    import sdjwt_verify
except ImportError as e:  # pragma: no cover - the Rust test reports this
    print(f"share_party.py: {e}: run scripts/services/agency.sh", file=sys.stderr, flush=True)
    sys.exit(3)


class ShortJWT(PrivateKeyJWT):
    """A client assertion that lives two minutes (authlib's default is an hour)."""

    def sign(self, auth, token_endpoint):
        now = int(time.time())
        self.claims = {"iat": now, "exp": now + 120}
        return super().sign(auth, token_endpoint)


class FormParser(html.parser.HTMLParser):
    """The consent form's inputs: hidden fields and the optional items' checkboxes."""

    def __init__(self):
        super().__init__()
        self.fields = []
        self.optional = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag != "input":
            return
        if a.get("type") == "hidden":
            self.fields.append((a["name"], a.get("value", "")))
        elif a.get("type") == "checkbox" and a.get("name") == "item":
            self.optional.append(a["value"])


def proof(holder, htm, htu, ath=None):
    claims = {"jti": str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": int(time.time())}
    if ath is not None:
        claims["ath"] = sdjwt_verify.sha256_b64(ath)
    t = jwt.JWT(
        header={"typ": "dpop+jwt", "alg": "ES256", "jwk": holder.export_public(as_dict=True)},
        claims=claims,
    )
    t.make_signed_token(holder)
    return t.serialize()


def status_bit(api, status):
    """The grant's bit in the signed status list its extract names (1: revoked)."""
    import zlib

    from jwcrypto import jws

    keys = jwk.JWKSet.from_json(requests.get(f"{api}/agency/v1/jwks.json", timeout=10).text)
    r = requests.get(status["uri"], timeout=10)
    t = jws.JWS()
    t.deserialize(r.text.strip())
    if t.jose_header.get("typ") != "statuslist+jwt":
        raise SystemExit(f"share_party.py: the status list's typ is {t.jose_header.get('typ')!r}")
    t.verify(keys.get_key(t.jose_header["kid"]), alg="ES256")
    lst = json.loads(t.payload)["status_list"]
    bits = zlib.decompress(sdjwt_verify.b64url_decode(lst["lst"]))
    idx = status["idx"]
    return (bits[idx // 8] >> (idx % 8)) & 1


def load_key(path):
    with open(path, "rb") as f:
        return jwk.JWK.from_pem(f.read())


def fetch(api, token, holder, dpop=None):
    url = f"{api}/share/v1/data"
    headers = {"Authorization": f"DPoP {token}"}
    headers["DPoP"] = dpop if dpop is not None else proof(holder, "GET", url, ath=token)
    return requests.get(url, headers=headers, timeout=10)


def authorize(session, endpoint, browser, verifier, untick):
    details = [
        {
            "type": "oshirase_resident_data",
            "items": ["name", "address"],
            "optional_items": ["birth_date"],
            "max_days": 30,
        }
    ]
    uri, state = session.create_authorization_url(
        endpoint,
        code_verifier=verifier,
        authorization_details=json.dumps(details),
    )
    r = browser.get(uri, allow_redirects=False, timeout=10)
    if r.status_code != 200:
        raise SystemExit(f"share_party.py: the consent page answered {r.status_code}: {r.text[:300]}")
    form = FormParser()
    form.feed(r.text)
    body = list(form.fields)
    body += [("item", i) for i in form.optional if i not in untick]
    body.append(("action", "approve"))
    r = browser.post(endpoint, data=body, allow_redirects=False, timeout=10)
    if r.status_code != 303:
        raise SystemExit(f"share_party.py: approving answered {r.status_code}: {r.text[:300]}")
    return r.headers["Location"], state, r.text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flow", "fetch", "set"])
    p.add_argument("--set-file")
    p.add_argument("--aud")
    p.add_argument("--api", required=True)
    p.add_argument("--client")
    p.add_argument("--client-key")
    p.add_argument("--kid")
    p.add_argument("--holder-key", required=True)
    p.add_argument("--redirect")
    p.add_argument("--cookie")
    p.add_argument("--untick", action="append", default=[])
    p.add_argument("--state-file", required=True)
    args = p.parse_args()
    api = args.api.rstrip("/")
    holder = load_key(args.holder_key)

    if args.mode == "set":
        from jwcrypto import jws

        with open(args.set_file) as f:
            token = f.read().strip()
        keys = jwk.JWKSet.from_json(requests.get(f"{api}/agency/v1/jwks.json", timeout=10).text)
        t = jws.JWS()
        t.deserialize(token)
        header = t.jose_header
        t.verify(keys.get_key(header["kid"]), alg="ES256")
        claims = json.loads(t.payload)
        event = claims["events"]["urn:oshirase:secevent:grant-revoked"]
        print(json.dumps({
            "typ": header.get("typ"),
            "aud_ok": claims["aud"] == args.aud,
            "iss": claims["iss"],
            "grant_id": event["grant_id"],
        }))
        return 0

    if args.mode == "fetch":
        with open(args.state_file) as f:
            saved = json.load(f)
        r = fetch(api, saved["access_token"], holder)
        out = {"http": r.status_code, "body": r.text[:500], "status_bit": status_bit(api, saved["status"])}
        print(json.dumps(out, ensure_ascii=False))
        return 0

    # RFC 8414: the metadata of issuer I is at I/.well-known/oauth-authorization-server and
    # names I itself; the party then takes every endpoint from it.
    meta = requests.get(f"{api}/.well-known/oauth-authorization-server", timeout=10).json()
    report = {
        "metadata_issuer_ok": meta["issuer"] == api,
        "metadata_iss_parameter": meta.get("authorization_response_iss_parameter_supported"),
        "metadata_pkce": meta.get("code_challenge_methods_supported"),
        "metadata_dpop": meta.get("dpop_signing_alg_values_supported"),
        "metadata_details": meta.get("authorization_details_types_supported"),
    }
    token_url = meta["token_endpoint"]
    with open(args.client_key, "rb") as f:
        client_key = ECKey.import_key(f.read())
    session = OAuth2Session(
        args.client,
        client_key,
        token_endpoint_auth_method="private_key_jwt",
        redirect_uri=args.redirect,
        code_challenge_method="S256",
    )
    session.register_client_auth_method(ShortJWT(token_url, headers={"kid": args.kid}, alg="ES256"))
    browser = requests.Session()
    name, _, value = args.cookie.partition("=")
    browser.cookies.set(name, value)

    verifier = generate_token(48)
    location, state, _ = authorize(session, meta["authorization_endpoint"], browser, verifier, args.untick)
    back = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    report["redirect_state_ok"] = back.get("state") == [state]
    # RFC 9207 §2.4: an answer whose iss is not the issuer we asked is dropped (mix-up).
    report["redirect_iss_ok"] = back.get("iss") == [meta["issuer"]]
    code = back["code"][0]

    # Without a DPoP proof the token endpoint refuses.
    r = requests.post(
        token_url,
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": args.redirect},
        timeout=10,
    )
    report["token_without_client"] = r.status_code

    token = session.fetch_token(
        token_url,
        authorization_response=location,
        code_verifier=verifier,
        headers={"DPoP": proof(holder, "POST", token_url)},
    )
    report["token_type"] = token.get("token_type")
    report["granted_items"] = token["authorization_details"][0]["items"]
    access = token["access_token"]

    r = fetch(api, access, holder)
    report["data_http"] = r.status_code
    report["content_type"] = r.headers.get("Content-Type")
    sd_jwt = r.text.strip()
    jwks = requests.get(f"{api}/agency/v1/jwks.json", timeout=10).text
    now = int(time.time())
    payload, claims = sdjwt_verify.verify_issued(jwks, sd_jwt, now)
    report["claims"] = claims
    report["bound_to_our_key"] = jwk.JWK(**payload["cnf"]["jwk"]).thumbprint() == holder.thumbprint()
    presentation = sdjwt_verify.present(sd_jwt, holder, "https://verifier.example", "n-1", now)
    report["kb_ok"] = sdjwt_verify.verify_presentation(presentation, payload, "https://verifier.example", "n-1", now)
    report["exp_minus_iat"] = payload["exp"] - payload["iat"]
    report["status_bit"] = status_bit(api, payload["status"]["status_list"])
    with open(args.state_file, "w") as f:
        json.dump({"access_token": access, "status": payload["status"]["status_list"]}, f)

    # Attacks on the data endpoint: no proof, another key's proof, a proof used twice.
    r = requests.get(f"{api}/share/v1/data", headers={"Authorization": f"DPoP {access}"}, timeout=10)
    report["data_without_proof"] = r.status_code
    other = jwk.JWK.generate(kty="EC", crv="P-256")
    r = fetch(api, access, holder, dpop=proof(other, "GET", f"{api}/share/v1/data", ath=access))
    report["data_with_another_key"] = r.status_code
    once = proof(holder, "GET", f"{api}/share/v1/data", ath=access)
    first = fetch(api, access, holder, dpop=once).status_code
    second = fetch(api, access, holder, dpop=once).status_code
    report["proof_used_twice"] = [first, second]
    r = requests.get(
        f"{api}/share/v1/data",
        headers={"Authorization": f"Bearer {access}", "DPoP": proof(holder, "GET", f"{api}/share/v1/data", ath=access)},
        timeout=10,
    )
    report["data_as_bearer"] = r.status_code

    # A second consent, redeemed with the wrong code_verifier: refused.
    verifier2 = generate_token(48)
    location2, _, _ = authorize(session, meta["authorization_endpoint"], browser, verifier2, args.untick)
    code2 = urllib.parse.parse_qs(urllib.parse.urlsplit(location2).query)["code"][0]
    # Through authlib, which signs a fresh client assertion for each request.
    try:
        session.fetch_token(
            token_url,
            code=code2,
            code_verifier=generate_token(48),
            headers={"DPoP": proof(holder, "POST", token_url)},
        )
        report["pkce_mismatch"] = "accepted"
    except Exception as e:  # authlib raises OAuthError with the server's error
        report["pkce_mismatch"] = getattr(e, "error", str(e))

    # The party's own dashboard: its grants, through a client_credentials token.
    dash = session.fetch_token(token_url, grant_type="client_credentials", headers={"DPoP": proof(holder, "POST", token_url)})
    grants_url = f"{api}/share/v1/grants"
    r = requests.get(
        grants_url,
        headers={"Authorization": f"DPoP {dash['access_token']}", "DPoP": proof(holder, "GET", grants_url, ath=dash["access_token"])},
        timeout=10,
    )
    report["grants_http"] = r.status_code
    report["grants"] = sorted(g["status"] for g in r.json()["grants"])
    # The dashboard's token does not open anyone's data.
    r = fetch(api, dash["access_token"], holder)
    report["data_with_dashboard_token"] = r.status_code

    # Refreshed within the grant's life, with the same key: a token that answers. The
    # refresh token with another key, or a second time, is refused; a second use revokes.
    def refresh(rt, key):
        try:
            return session.fetch_token(
                token_url,
                grant_type="refresh_token",
                refresh_token=rt,
                headers={"DPoP": proof(key, "POST", token_url)},
            )
        except Exception as e:
            return {"error": getattr(e, "error", str(e))}

    first_refresh = token["refresh_token"]
    renewed = refresh(first_refresh, holder)
    report["refreshed_data"] = fetch(api, renewed["access_token"], holder).status_code
    report["refresh_with_another_key"] = refresh(renewed["refresh_token"], other).get("error")
    report["refresh_replayed"] = refresh(first_refresh, holder).get("error")
    report["data_after_refresh_replay"] = fetch(api, renewed["access_token"], holder).status_code

    # The first code again: refused, and the grant it made is revoked.
    try:
        session.fetch_token(
            token_url,
            code=code,
            code_verifier=verifier,
            headers={"DPoP": proof(holder, "POST", token_url)},
        )
        report["code_replay"] = "accepted"
    except Exception as e:
        report["code_replay"] = getattr(e, "error", str(e))
    print(json.dumps(report, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
