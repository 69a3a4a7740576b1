#!/usr/bin/env python3
"""Re-checks the worked example of docs/protocol.md (section 12) with Python's standard
library alone, following the page's rules rather than the Rust code: body hashes, the
strings signed, request and response HMACs, the relogin proof, the messages as sent, and the
example tokens and JWKS (Ed25519 written out from RFC 8032, which hashlib lacks). Exits non-zero when the page
shows anything else. Run by .ci/run."""
import base64
import email.utils
import hashlib
import hmac
import json
import pathlib
import sys

doc = (pathlib.Path(__file__).resolve().parents[4] / "docs" / "protocol.md").read_text()


def run(first, n):
    return bytes(range(first, first + n))


def b64(b):
    return base64.b64encode(b).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# Section 12.1: every input is a run of consecutive byte values (the device secret counts down).
secret = run(0x00, 32)
device_secret = bytes(range(0xFF, 0xFF - 32, -1))
seed = run(0x20, 32)
key_id, device_id = "k_" + b64url(run(0x40, 16)), "d_" + b64url(run(0x50, 16))
session_id, lease_id = "s_" + b64url(run(0x60, 16)), "l_" + b64url(run(0x70, 16))
refresh_token = "rt_" + b64url(run(0x80, 32))
nonce_get, nonce_refresh = b64(run(0xA0, 16)), b64(run(0xB0, 16))
lease_key = b64(run(0xC0, 32))
access_jti, offline_jti = "at_" + b64url(run(0xE0, 16)), "ot_" + b64url(run(0xF0, 16))
LOGIN_AT = 1767225600
GET_AT, REFRESH_AT = LOGIN_AT + 60, LOGIN_AT + 540
RELOGIN_AT = LOGIN_AT + 7 * 86400
ATTEMPT_ID = "3f0c8a52-6d1e-4b7a-9e24-71c5d0b8f613"
HOST, USER, ROLE = "vault.example", "alice", "inspector"

missing, checked = [], 0


def shows(what, text):
    global checked
    checked += 1
    if text not in doc:
        missing.append(f"--- {what}:\n{text}")


def compact(v):
    return json.dumps(v, separators=(",", ":"))


def escaped(s):
    return s.replace("\n", "\\n\n")


def http(head, body=""):
    """As the page prints a message: LF line ends, the empty line and body only with a body."""
    return "\n".join(head) + ("\n\n" + body if body else "")


def sign_request(method, target, body, ts, nonce):
    s = f"{method}\n{target}\n{hashlib.sha256(body.encode()).hexdigest()}\n{ts}\n{nonce}"
    return s, b64(hmac.new(secret, s.encode(), hashlib.sha256).digest())


def sign_response(status, nonce, body, ts):
    s = f"FV1-RESPONSE\n{status}\n{nonce}\n{hashlib.sha256(body.encode()).hexdigest()}\n{ts}"
    return s, b64(hmac.new(secret, s.encode(), hashlib.sha256).digest())


# Ed25519 signing, RFC 8032 section 6 (deterministic, so the tokens must come out identical).
P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def point_add(a, b):
    e, f = (a[1] - a[0]) * (b[1] - b[0]) % P, (a[1] + a[0]) * (b[1] + b[0]) % P
    g, h = 2 * a[3] * b[3] * D % P, 2 * a[2] * b[2] % P
    e, f, g, h = f - e, h - g, h + g, f + e
    return (e * f, g * h, f * g, e * h)


def point_mul(s, p):
    acc = (0, 1, 1, 0)
    while s:
        if s & 1:
            acc = point_add(acc, p)
        p, s = point_add(p, p), s >> 1
    return acc


def compress(p):
    zinv = pow(p[2], P - 2, P)
    x, y = p[0] * zinv % P, p[1] * zinv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def base_point():
    y = 4 * pow(5, P - 2, P) % P
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if x & 1:
        x = P - x
    return (x, y, 1, x * y % P)


G = base_point()


def ed25519(seed, msg):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    public = compress(point_mul(a, G))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % Q
    big_r = compress(point_mul(r, G))
    k = int.from_bytes(hashlib.sha512(big_r + public + msg).digest(), "little") % Q
    return public, big_r + ((r + k * a) % Q).to_bytes(32, "little")


public, _ = ed25519(seed, b"")
kid = b64url(hashlib.sha256(public).digest()[:12])
shows("kid", f"`{kid}`")
shows("PKCS#8 prefix", "`302e020100300506032b657004220420`")
shows("JWKS", compact({"keys": [{"alg": "EdDSA", "crv": "Ed25519", "kid": kid, "kty": "OKP", "use": "sig",
                                 "x": b64url(public)}]}))


def token(typ, aud, exp, jti):
    header = compact({"typ": typ, "alg": "EdDSA", "kid": kid})
    claims = compact({"iss": "fieldvault-server", "sub": USER, "aud": aud, "sid": session_id,
                      "device_id": device_id, "roles": [ROLE], "iat": LOGIN_AT, "exp": exp, "jti": jti})
    shows(f"{typ} header", header)
    shows(f"{typ} claims", claims)
    signing_input = (b64url(header.encode()) + "." + b64url(claims.encode())).encode()
    _, sig = ed25519(seed, signing_input)
    t = signing_input.decode() + "." + b64url(sig)
    shows(f"{typ} token", t)
    return t


access = token("at+jwt", "fieldvault/access", LOGIN_AT + 600, access_jti)
offline = token("fv-offline+jwt", "fieldvault/offline", LOGIN_AT + 7 * 86400, offline_jti)

# 12.1 and 12.2: the inputs as they appear, and login.
for what, value in [("key id", key_id), ("device id", device_id), ("session id", session_id),
                    ("lease id", lease_id), ("refresh token", refresh_token), ("lease key", lease_key),
                    ("access jti", access_jti), ("offline jti", offline_jti), ("GET nonce", nonce_get),
                    ("refresh nonce", nonce_refresh), ("session secret", b64(secret)),
                    ("device secret", b64(device_secret))]:
    shows(what, f"`{value}`")
shows("login time", f"`{LOGIN_AT}` ({email.utils.formatdate(LOGIN_AT, usegmt=True)})")
login_body = compact({"user": USER, "password": "correct horse battery staple", "device_name": "field tablet"})
shows("login request", http(["POST /v1/auth/login HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json",
                             f"Content-Length: {len(login_body)}"], login_body))
tokens = {"access_token": access, "refresh_token": refresh_token, "offline_token": offline,
          "session_secret": b64(secret), "key_id": key_id, "device_id": device_id,
          "device_secret": b64(device_secret), "expires_in": 600,
          "lease": {"lease_id": lease_id, "key": lease_key, "expires_at": LOGIN_AT + 7 * 86400}}
shows("login response body", json.dumps(tokens, indent=2))
shows("login response head", http(["HTTP/1.1 200 OK", "content-type: application/json", "cache-control: no-store",
                                   f"content-length: {len(compact(tokens))}",
                                   f"date: {email.utils.formatdate(LOGIN_AT, usegmt=True)}"]))

# 12.4: the signed GET.
target = "/v1/devices/self?verbose=1"
shows("empty body hash", hashlib.sha256(b"").hexdigest())
s, sig = sign_request("GET", target, "", GET_AT, nonce_get)
shows("GET signing string", escaped(s))
shows("GET signing string length", f"{len(s)} bytes")
shows("GET signature", f"`{sig}`")
shows("GET request", http([f"GET {target} HTTP/1.1", f"Host: {HOST}", f"Authorization: Bearer {access}",
                           f"X-Key-Id: {key_id}", f"X-Timestamp: {GET_AT}", f"X-Nonce: {nonce_get}",
                           f"X-Signature: {sig}"]))

# 12.5: its signed response.
body = compact({"user": USER, "device_id": device_id, "key_id": key_id, "roles": [ROLE]})
shows("200 body length", f"{len(body)}-byte body")
shows("200 body hash", f"`{hashlib.sha256(body.encode()).hexdigest()}`")
s, sig = sign_response(200, nonce_get, body, GET_AT + 1)
shows("200 signing string", escaped(s))
shows("200 response", http(["HTTP/1.1 200 OK", "content-type: application/json", f"x-timestamp: {GET_AT + 1}",
                            f"x-signature: {sig}", f"content-length: {len(body)}",
                            f"date: {email.utils.formatdate(GET_AT + 1, usegmt=True)}"], body))

# 12.6: the signed refresh.
body = compact({"refresh_token": refresh_token, "attempt_id": ATTEMPT_ID})
shows("refresh body", f"`{body}`")
shows("refresh body length", f"{len(body)}-byte body")
shows("refresh body hash", f"`{hashlib.sha256(body.encode()).hexdigest()}`")
s, sig = sign_request("POST", "/v1/auth/refresh", body, REFRESH_AT, nonce_refresh)
shows("refresh signing string", escaped(s))
shows("refresh signing string length", f"{len(s)} bytes")
shows("refresh signature", f"`{sig}`")
shows("refresh request", http(["POST /v1/auth/refresh HTTP/1.1", f"Host: {HOST}", f"X-Key-Id: {key_id}",
                               f"X-Timestamp: {REFRESH_AT}", f"X-Nonce: {nonce_refresh}", f"X-Signature: {sig}",
                               "Content-Type: application/json", f"Content-Length: {len(body)}"], body))

# 12.7: the replay's signed refusal (problem+json, fields in alphabetical order).
body = compact({"code": "replayed_nonce", "detail": "this nonce was already used", "status": 401,
                "title": "This nonce was already used",
                "type": "https://fieldvault.invalid/problems/replayed_nonce"})
shows("401 body hash", f"`{hashlib.sha256(body.encode()).hexdigest()}`")
s, sig = sign_response(401, nonce_refresh, body, REFRESH_AT + 1)
shows("401 signing string", escaped(s))
shows("401 response", http(["HTTP/1.1 401 Unauthorized", "content-type: application/problem+json",
                            "cache-control: no-store", f"date: {email.utils.formatdate(REFRESH_AT + 1, usegmt=True)}",
                            f"x-timestamp: {REFRESH_AT + 1}", f"x-signature: {sig}", f"content-length: {len(body)}"],
                           body))
# 12.8: a later login naming the device, with its relogin proof.
shows("relogin time", f"`{RELOGIN_AT}` ({email.utils.formatdate(RELOGIN_AT, usegmt=True)})")
s = f"FV1-RELOGIN\n{device_id}\n{RELOGIN_AT}"
proof = b64(hmac.new(device_secret, s.encode(), hashlib.sha256).digest())
shows("relogin string", escaped(s))
shows("relogin string length", f"{len(s)} bytes")
shows("relogin proof", f"`{proof}`")
body = compact({"user": USER, "password": "correct horse battery staple", "device_name": "field tablet",
                "device": {"id": device_id, "ts": RELOGIN_AT, "proof": proof}})
shows("relogin body length", f"the body is {len(body)} bytes")
shows("relogin request", http(["POST /v1/auth/login HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json",
                               f"Content-Length: {len(body)}"], body))
shows("relogin lease", "`" + compact({"lease_id": lease_id, "key": lease_key,
                                       "expires_at": RELOGIN_AT + 7 * 86400}) + "`")

shows("nonce retention", "timestamp + 300 + 60 = timestamp + 360 s")

if missing:
    sys.exit("docs/protocol.md does not show:\n" + "\n".join(missing))
print(f"protocol example: {checked} values match docs/protocol.md, 0 differ")
