#!/usr/bin/env python3
"""A push service for the web push tests, independent of the Rust code it checks.

It plays the part of FCM or Mozilla autopush on 127.0.0.1:

  POST /subscribe      body {"responses": [413, 201]} (or [{"status": 429, "retry_after": "30"}]);
                       creates a subscription with its own P-256 key and auth secret and answers
                       {"endpoint", "keys": {"p256dh", "auth"}}. Each push to it takes the next
                       planned answer; when the plan is used up it answers 201.
  POST /push/<id>      a push message: checks the VAPID `Authorization: vapid t=<jwt>, k=<key>`
                       header (ES256 with k, `aud` = this service's origin, `exp` in the next 24 h,
                       `sub` mailto: or https:), `TTL`, `Content-Encoding: aes128gcm`, decrypts the
                       body with http_ece, records it and answers the planned status. A refused
                       request is recorded with the reason and answered 401 (400 for a bad body).
  GET  /messages       {"messages": [...], "rejections": [...]}

Usage: push_service.py [PORT]   (0 or nothing: any free port). The first line on stdout is
"PORT <n>" once the service listens.
"""

import base64
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import http_ece
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
except ImportError as e:  # the Rust test reads this line
    print(f"MISSING {e.name}: run scripts/services/push.sh", file=sys.stderr, flush=True)
    sys.exit(3)

# RFC 8030 push services take at least 4096 bytes of body; larger ones are refused.
MAX_BODY = 4096

LOCK = threading.Lock()
SUBSCRIPTIONS = {}  # id -> {"key": private key, "auth": bytes, "plan": [answers]}
MESSAGES = []
REJECTIONS = []


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Refused(Exception):
    """A request the push service does not accept; the message is the reason."""


def parse_vapid(header):
    """`vapid t=<jwt>, k=<key>` -> (jwt, key)."""
    if not header:
        raise Refused("no Authorization header")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise Refused(f"Authorization scheme {scheme!r} is not vapid")
    fields = {}
    for part in params.split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            fields[name.strip()] = value.strip()
    if "t" not in fields or "k" not in fields:
        raise Refused("the vapid Authorization header needs t= and k=")
    return fields["t"], fields["k"]


def verify_vapid(header, origin):
    """Checks the token and returns its claims."""
    token, key = parse_vapid(header)
    try:
        point = b64url_decode(key)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except Exception as e:
        raise Refused(f"k is not a P-256 public key: {e}")
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused("t is not a JWT")
    try:
        head = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except Exception as e:
        raise Refused(f"t is not a readable JWT: {e}")
    if head.get("alg") != "ES256":
        raise Refused(f"JWT alg is {head.get('alg')!r}, not ES256")
    if len(sig) != 64:
        raise Refused("the ES256 signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused("bad JWT signature for key k")
    if claims.get("aud") != origin:
        raise Refused(f"aud {claims.get('aud')!r} is not this service's origin {origin!r}")
    exp = claims.get("exp")
    now = time.time()
    if not isinstance(exp, (int, float)) or exp <= now:
        raise Refused(f"exp {exp!r} is missing or in the past")
    if exp > now + 24 * 3600:
        raise Refused(f"exp {exp!r} is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not (sub.startswith("mailto:") or sub.startswith("https:")):
        raise Refused(f"sub {sub!r} is not a mailto: or https: URL")
    return {"aud": claims["aud"], "exp": exp, "sub": sub, "k": key}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the test prints what it needs
        pass

    def origin(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, status, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path != "/messages":
            return self.answer(404, {"error": "not found"})
        with LOCK:
            self.answer(200, {"messages": MESSAGES, "rejections": REJECTIONS})

    def do_POST(self):
        body = self.read_body()
        if self.path == "/subscribe":
            return self.subscribe(body)
        if self.path.startswith("/push/"):
            return self.push(self.path[len("/push/"):], body)
        self.answer(404, {"error": "not found"})

    def subscribe(self, body):
        try:
            spec = json.loads(body or b"{}")
            plan = []
            for r in spec.get("responses", []):
                plan.append(r if isinstance(r, dict) else {"status": int(r)})
        except Exception as e:
            return self.answer(400, {"error": f"bad subscribe request: {e}"})
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        sid = secrets.token_urlsafe(12)
        with LOCK:
            SUBSCRIPTIONS[sid] = {"key": key, "auth": auth, "plan": plan}
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.answer(
            201,
            {
                "endpoint": f"{self.origin()}/push/{sid}",
                "keys": {"p256dh": b64url_encode(point), "auth": b64url_encode(auth)},
            },
        )

    def refuse(self, sid, status, reason):
        with LOCK:
            REJECTIONS.append({"subscription": sid, "status": status, "reason": reason})
        self.answer(status, {"error": reason})

    def push(self, sid, body):
        with LOCK:
            sub = SUBSCRIPTIONS.get(sid)
        if sub is None:
            return self.refuse(sid, 404, "no such subscription")
        try:
            vapid = verify_vapid(self.headers.get("Authorization"), self.origin())
        except Refused as e:
            return self.refuse(sid, 401, str(e))
        ttl = self.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            return self.refuse(sid, 400, f"TTL header {ttl!r} is missing or not a number")
        encoding = self.headers.get("Content-Encoding")
        if encoding != "aes128gcm":
            return self.refuse(sid, 415, f"Content-Encoding {encoding!r} is not aes128gcm")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub["key"], auth_secret=sub["auth"], version="aes128gcm"
            )
        except Exception as e:
            return self.refuse(sid, 400, f"cannot decrypt the body: {e!r}")
        try:
            payload = json.loads(plain)
        except ValueError as e:
            return self.refuse(sid, 400, f"the payload is not JSON: {e}")
        if len(body) > MAX_BODY:
            status, plan_entry = 413, None
        else:
            with LOCK:
                plan_entry = sub["plan"].pop(0) if sub["plan"] else {"status": 201}
            status = int(plan_entry["status"])
        with LOCK:
            MESSAGES.append(
                {
                    "subscription": sid,
                    "status": status,
                    "ttl": int(ttl),
                    "urgency": self.headers.get("Urgency"),
                    "topic": self.headers.get("Topic"),
                    "payload": payload,
                    "payload_size": len(plain),
                    "body_size": len(body),
                    "vapid": vapid,
                }
            )
        headers = {}
        if plan_entry and plan_entry.get("retry_after") is not None:
            headers["Retry-After"] = str(plan_entry["retry_after"])
        if 200 <= status < 300:
            headers["Location"] = f"{self.origin()}/message/{len(MESSAGES)}"
        self.answer(status, None, headers)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
