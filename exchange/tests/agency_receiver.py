#!/usr/bin/env python3
"""An agency, written with libraries that share no code with oshirase: it receives the
municipality's change events and reads what it is entitled to, as a pension office or an
insurer would. The Rust tests (exchange/tests/agencies.rs) start one per agency.

    AGENCY_WHSEC=whsec_... AGENCY_WHPK=whpk_... python3 agency_receiver.py \
        --agency=ID --purpose=PURPOSE --api=http://127.0.0.1:PORT --key=client.pem --kid=KID \
        [--port=0] [--now=UNIX]

(or AGENCY_ID, AGENCY_PURPOSE, AGENCY_API, AGENCY_KEY, AGENCY_KID, AGENCY_PORT in the
environment; the secrets only from it).

It prints {"port": N} on its first line of stdout once it listens (--port 0: any free port).

  POST /webhook   the municipality's webhooks. Every request must carry a `v1` signature
                  that the PyPI `standardwebhooks` package accepts (HMAC, `whsec_`) AND a `v1a`
                  Ed25519 signature that `cryptography` verifies with the `whpk_` key, with a
                  timestamp within 5 minutes of the agency's clock; anything else is 401.
                  The endpoint verification handshake is answered with its challenge.
                  Duplicates are dropped by `webhook-id`. A gap in an event stream's `sequence`,
                  or a heartbeat whose `last_sequence` is ahead, is recovered from
                  `GET /agency/v1/events?after=…` with an access token obtained by `authlib`
                  (client_credentials, private_key_jwt with the ES256 client key). Every event
                  recorded is followed by a pull of the person (`GET /agency/v1/persons/…`),
                  whose JWS is verified with `jwcrypto` against `/agency/v1/jwks.json`.
  GET  /state     everything it saw, as JSON.
  POST /control   {"down": bool}           answer 503 to every webhook (before reading it)
                  {"drop": n}              accept the next n events but forget them (a lost
                                           message: the next one shows the gap)
                  {"fail_after": n}        record the next n events, then answer 503 (the
                                           answer was lost: the sender sends them again)
                  {"now": unix seconds}    set the agency's clock (the tests' fixed clock)
                  {"pull": bool}           pull the person after each event (default true)
  POST /control/api   {"method", "path", "json"?}: call the API with the agency's token
  POST /control/pull  {"subject", "purpose"?, "items"?, "as_of"?}: pull a person and verify

Events of a purpose other than --purpose are recorded as `foreign` (and not otherwise used).

Exit status 3 when a package is missing: run scripts/services/agency.sh.
"""

import argparse
import base64
import datetime as _dt
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import requests
    import standardwebhooks.webhooks as swh
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey
    from jwcrypto import jwk as jwcrypto_jwk
    from jwcrypto import jws as jwcrypto_jws
except ImportError as e:  # pragma: no cover - the Rust test reports this
    print(f"agency_receiver.py: {e}: run scripts/services/agency.sh", file=sys.stderr, flush=True)
    sys.exit(3)

VERIFICATION = "jp.lg.oshirase.endpoint.verification"
HEARTBEAT = "jp.lg.oshirase.stream.heartbeat"
TOLERANCE = 5 * 60
MAX_BODY = 1 << 20


# ---------------------------------------------------------------------------------------------
# The agency's clock: the real one, or the one the test sets (its fixed clock), so that the
# timestamps of the webhooks and of the client assertions agree with the municipality's.
# ---------------------------------------------------------------------------------------------

CLOCK = {"now": None}


def agency_now():
    return CLOCK["now"] if CLOCK["now"] is not None else time.time()


class _AgencyDatetime(_dt.datetime):
    """`standardwebhooks` reads `datetime.now()` for its timestamp tolerance: give it ours."""

    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(agency_now(), tz=tz)


swh.datetime = _AgencyDatetime


class AgencyPrivateKeyJWT(PrivateKeyJWT):
    """authlib's private_key_jwt with a short-lived assertion (the token endpoint accepts at
    most 5 minutes; authlib's default is an hour) dated by the agency's clock. A fresh claims
    dict each time: authlib writes the `jti` into the dict it is given."""

    def sign(self, auth, token_endpoint):
        now = int(agency_now())
        self.claims = {"iat": now, "exp": now + 120}
        return super().sign(auth, token_endpoint)


def b64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


class Agency:
    def __init__(self, args, whsec, whpk):
        self.args = args
        self.lock = threading.RLock()
        self.webhook = Webhook(whsec)
        if not whpk.startswith("whpk_"):
            raise SystemExit("agency_receiver.py: the public key does not start with whpk_")
        self.public_key = Ed25519PublicKey.from_public_bytes(b64(whpk[len("whpk_"):]))
        self.api_base = args.api.rstrip("/")
        self.token_url = self.api_base + "/agency/v1/token"
        with open(args.key, "rb") as f:
            self.client_key = ECKey.import_key(f.read())
        self.session = OAuth2Session(
            args.agency, self.client_key, token_endpoint_auth_method="private_key_jwt"
        )
        self.session.register_client_auth_method(
            AgencyPrivateKeyJWT(self.token_url, headers={"kid": args.kid}, alg="ES256")
        )
        self.has_token = False
        self.jwks = None
        # Controls.
        self.down = False
        self.drop = 0
        self.fail_after = 0
        self.pull = True
        # What it saw.
        self.seen_ids = set()
        self.last = {}  # purpose -> last sequence recorded
        self.events = []  # recorded events in order
        self.deliveries = []  # every webhook request that passed the signature checks
        self.refused = []  # requests refused (401), with why
        self.down_answers = 0
        self.dropped = []
        self.foreign = []
        self.stale = []
        self.heartbeats = []
        self.gaps = []
        self.persons = {}
        self.pull_errors = []
        self.token_errors = []
        self.tokens = 0
        self.challenges = 0

    def state(self):
        with self.lock:
            return {
                "agency": self.args.agency,
                "events": self.events,
                "deliveries": self.deliveries,
                "refused": self.refused,
                "down_answers": self.down_answers,
                "dropped": self.dropped,
                "foreign": self.foreign,
                "stale": self.stale,
                "purpose": self.args.purpose,
                "heartbeats": self.heartbeats,
                "gaps": self.gaps,
                "persons": self.persons,
                "pull_errors": self.pull_errors,
                "token_errors": self.token_errors,
                "tokens": self.tokens,
                "challenges": self.challenges,
                "last_sequence": self.last,
                "now": agency_now(),
            }

    # --- the API, through authlib ----------------------------------------------------------

    def fetch_token(self):
        try:
            self.session.fetch_token(self.token_url, grant_type="client_credentials")
        except Exception as e:  # authlib raises OAuthError with the server's error
            self.token_errors.append(repr(e))
            raise
        self.tokens += 1
        self.has_token = True

    def call(self, method, path, **kwargs):
        """One API call with the agency's access token, fetched (again) when missing or
        refused: our clock may have moved past its expiry."""
        if not self.has_token:
            self.fetch_token()
        url = self.api_base + path
        r = self.session.request(method, url, timeout=10, **kwargs)
        if r.status_code == 401:
            self.fetch_token()
            r = self.session.request(method, url, timeout=10, **kwargs)
        return r

    def keyset(self):
        if self.jwks is None:
            r = requests.get(self.api_base + "/agency/v1/jwks.json", timeout=10)
            r.raise_for_status()
            self.jwks = jwcrypto_jwk.JWKSet.from_json(r.text)
        return self.jwks

    def verify_extract(self, token):
        """The pull's JWS, verified against the published keys; a copy with its payload
        changed must fail."""
        keys = self.keyset()
        signed = jwcrypto_jws.JWS()
        signed.deserialize(token)
        signed.verify(keys)
        header = signed.jose_header
        claims = json.loads(signed.payload)
        head, payload, sig = token.split(".")
        forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged["items"] = {"name": "someone else"}
        forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        tampered = jwcrypto_jws.JWS()
        tampered.deserialize(f"{head}.{forged_payload}.{sig}")
        try:
            tampered.verify(keys)
            tamper_rejected = False
        except Exception:
            tamper_rejected = True
        return header, claims, tamper_rejected

    def pull_person(self, subject, purpose, items=None, as_of=None):
        params = {"purpose": purpose}
        if items is not None:
            params["items"] = items
        if as_of is not None:
            params["as_of"] = as_of
        path = "/agency/v1/persons/" + urllib.parse.quote(subject, safe="") + "?" + urllib.parse.urlencode(params)
        r = self.call("GET", path)
        out = {
            "status": r.status_code,
            "content_type": r.headers.get("content-type"),
            "body": r.text,
        }
        if r.status_code == 200:
            try:
                header, claims, tamper_rejected = self.verify_extract(r.text)
                out.update(verified=True, header=header, claims=claims, tamper_rejected=tamper_rejected)
            except Exception as e:
                out.update(verified=False, error=repr(e))
        return out

    # --- events ----------------------------------------------------------------------------

    def record(self, event, via, webhook_id=None):
        data = event.get("data") or {}
        purpose = data.get("purpose")
        seq = int(event["sequence"])
        self.events.append(
            {
                "id": event.get("id"),
                "webhook_id": webhook_id,
                "sequence": seq,
                "type": event.get("type"),
                "subject": event.get("subject"),
                "purpose": purpose,
                "items": data.get("items"),
                "dictionary_version": data.get("dictionary_version"),
                "via": via,
            }
        )
        self.last[purpose] = seq
        if self.pull and event.get("subject"):
            try:
                got = self.pull_person(event["subject"], purpose)
            except Exception as e:
                got = {"status": None, "error": repr(e)}
            if got.get("status") == 200 and got.get("verified"):
                self.persons[event["subject"]] = {
                    "purpose": purpose,
                    "claims": got["claims"],
                    "header": got["header"],
                    "tamper_rejected": got["tamper_rejected"],
                }
            else:
                self.pull_errors.append({"subject": event["subject"], "purpose": purpose, **got})

    def recover(self, purpose, upto, why):
        """Fetches the events after our last one up to `upto` through the pull API."""
        after = self.last.get(purpose, 0)
        gap = {"purpose": purpose, "after": after, "upto": upto, "why": why, "recovered": []}
        self.gaps.append(gap)
        while self.last.get(purpose, 0) < upto:
            query = urllib.parse.urlencode({"purpose": purpose, "after": self.last.get(purpose, 0), "limit": 100})
            r = self.call("GET", "/agency/v1/events?" + query)
            if r.status_code != 200:
                gap["error"] = f"{r.status_code} {r.text}"
                return
            got = [e for e in r.json()["events"] if int(e["sequence"]) <= upto]
            if not got:
                gap["error"] = "the API has no events after our last one"
                return
            for e in got:
                expected = self.last.get(purpose, 0) + 1
                if int(e["sequence"]) != expected:
                    gap["error"] = f"the API skipped from {expected - 1} to {e['sequence']}"
                    return
                self.record(e, "pull")
                # The CloudEvent id is the webhook-id of its deliveries: a later one is a duplicate.
                self.seen_ids.add(e["id"])
                gap["recovered"].append(int(e["sequence"]))

    def handle_webhook(self, headers, body):
        """(status, JSON answer) for one webhook request."""
        with self.lock:
            if self.down:
                self.down_answers += 1
                return 503, {"error": "down for maintenance"}
            webhook_id = headers.get("webhook-id", "")
            why = self.check_signatures(headers, body)
            if why:
                self.refused.append({"webhook_id": webhook_id, "reason": why})
                return 401, {"error": why}
            event = json.loads(body)
            kind = event.get("type")
            if kind == VERIFICATION:
                self.challenges += 1
                return 200, {"challenge": event["data"]["challenge"]}
            duplicate = webhook_id in self.seen_ids
            self.deliveries.append(
                {
                    "webhook_id": webhook_id,
                    "event_id": event.get("id"),
                    "type": kind,
                    "sequence": event.get("sequence"),
                    "duplicate": duplicate,
                }
            )
            if duplicate:
                return 200, {"duplicate": True}
            if kind != HEARTBEAT and self.drop > 0:
                self.drop -= 1
                self.dropped.append({"webhook_id": webhook_id, "sequence": event.get("sequence")})
                return 200, {}
            self.seen_ids.add(webhook_id)
            data = event.get("data") or {}
            purpose = data.get("purpose")
            if purpose != self.args.purpose:
                self.foreign.append({"webhook_id": webhook_id, "purpose": purpose})
                return 200, {}
            if kind == HEARTBEAT:
                last = int(data.get("last_sequence", 0))
                self.heartbeats.append({"purpose": purpose, "last_sequence": last})
                if last > self.last.get(purpose, 0):
                    self.recover(purpose, last, "heartbeat")
                    if self.last.get(purpose, 0) < last:
                        return 503, {"error": "could not fill the gap"}
                return 200, {}
            seq = int(event["sequence"])
            mine = self.last.get(purpose, 0)
            if seq <= mine:
                # Had it already under another id: ids are stable, so this is the sender's fault.
                self.stale.append({"webhook_id": webhook_id, "sequence": seq})
                return 200, {"old": True}
            if seq > mine + 1:
                self.recover(purpose, seq - 1, "sequence")
                if self.last.get(purpose, 0) != seq - 1:
                    # Not filled: refuse for now, so that it comes again.
                    self.seen_ids.discard(webhook_id)
                    return 503, {"error": "could not fill the gap"}
            self.record(event, "webhook", webhook_id)
            if self.fail_after > 0:
                self.fail_after -= 1
                return 503, {"error": "recorded, but this answer says otherwise"}
            return 200, {}

    def check_signatures(self, headers, body):
        """Why the request is refused, or None. Both signatures must verify."""
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            if not headers.get(name):
                return f"no {name} header"
        try:
            self.webhook.verify(body, headers)
        except WebhookVerificationError as e:
            return f"standardwebhooks (v1): {e}"
        try:
            ts = int(headers["webhook-timestamp"])
        except ValueError:
            return "webhook-timestamp is not integer seconds"
        if abs(ts - agency_now()) > TOLERANCE:
            return "v1a: the timestamp is more than 5 minutes from our clock"
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        sigs = [e[len("v1a,"):] for e in headers["webhook-signature"].split(" ") if e.startswith("v1a,")]
        if not sigs:
            return "no v1a signature"
        for s in sigs:
            try:
                self.public_key.verify(b64(s), signed)
                return None
            except (InvalidSignature, ValueError):
                pass
        return "cryptography (v1a): no Ed25519 signature verifies"


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


def make_handler(agency):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the state says what happened
            pass

        def answer(self, status, value):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(n)

        def do_GET(self):
            if self.path == "/state":
                self.answer(200, agency.state())
            else:
                self.answer(404, {"error": "no such path"})

        def do_POST(self):
            try:
                body = self.body()
            except ValueError as e:
                self.answer(413, {"error": str(e)})
                return
            try:
                if self.path == "/webhook":
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, value = agency.handle_webhook(headers, body)
                    self.answer(status, value)
                elif self.path == "/control":
                    self.control(json.loads(body))
                elif self.path == "/control/api":
                    req = json.loads(body)
                    with agency.lock:
                        kwargs = {"json": req["json"]} if "json" in req else {}
                        r = agency.call(req["method"], req["path"], **kwargs)
                    self.answer(200, {"status": r.status_code, "content_type": r.headers.get("content-type"), "body": r.text})
                elif self.path == "/control/pull":
                    req = json.loads(body)
                    with agency.lock:
                        purpose = req.get("purpose", agency.args.purpose)
                        got = agency.pull_person(req["subject"], purpose, req.get("items"), req.get("as_of"))
                    self.answer(200, got)
                else:
                    self.answer(404, {"error": "no such path"})
            except Exception as e:  # the test reads the reason
                self.answer(500, {"error": repr(e)})

        def control(self, c):
            with agency.lock:
                if "down" in c:
                    agency.down = bool(c["down"])
                if "drop" in c:
                    agency.drop = int(c["drop"])
                if "fail_after" in c:
                    agency.fail_after = int(c["fail_after"])
                if "pull" in c:
                    agency.pull = bool(c["pull"])
                if "now" in c:
                    CLOCK["now"] = float(c["now"])
            self.answer(200, {"ok": True})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("AGENCY_PORT", "0")))
    p.add_argument("--agency", default=os.environ.get("AGENCY_ID"), required="AGENCY_ID" not in os.environ)
    p.add_argument("--purpose", default=os.environ.get("AGENCY_PURPOSE"), required="AGENCY_PURPOSE" not in os.environ,
                   help="the purpose this agency holds and receives events under")
    p.add_argument("--api", default=os.environ.get("AGENCY_API"), required="AGENCY_API" not in os.environ)
    p.add_argument("--key", default=os.environ.get("AGENCY_KEY"), required="AGENCY_KEY" not in os.environ,
                   help="the agency's ES256 client key, PKCS#8 PEM")
    p.add_argument("--kid", default=os.environ.get("AGENCY_KID"), required="AGENCY_KID" not in os.environ)
    p.add_argument("--now", type=float, default=None, help="the agency's clock, unix seconds (default: the real clock)")
    args = p.parse_args()
    whsec = os.environ.get("AGENCY_WHSEC")
    whpk = os.environ.get("AGENCY_WHPK")
    if not whsec or not whpk:
        print("agency_receiver.py: set AGENCY_WHSEC (whsec_…) and AGENCY_WHPK (whpk_…)", file=sys.stderr)
        sys.exit(2)
    if args.now is not None:
        CLOCK["now"] = args.now
    agency = Agency(args, whsec, whpk)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(agency))
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
