"""`netdiag serve --web-config FILE`: the web configuration file of the Prometheus
exporter-toolkit (the format node_exporter and Prometheus read with --web.config.file), so one
file serves every exporter of a host.

Read the same way as the toolkit (web/tls_config.go, web/handler.go): unknown or duplicate keys
are errors; relative file names are relative to the file's directory; TLS is on when any TLS
key is set, and then needs a certificate and a key; a client CA needs a client_auth_type;
basic_auth_users maps user names to bcrypt hashes, checked one at a time and cached; the file
is read again when it (or a certificate it names) changes, so certificates can be rotated
without a restart. Where Python's ssl module cannot do what Go's crypto/tls does, the file is
refused with the reason instead of being half applied:
- client_auth_type RequestClientCert and RequireAnyClientCert (ask for a certificate without
  verifying it; the toolkit itself calls them insecure): refused;
- curve_preferences: one curve at most (OpenSSL through Python sets a single group);
- http2: accepted and ignored (netdiag speaks HTTP/1.1; clients negotiate down).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from netdiag.errors import NetdiagError

MAX_FILE_BYTES = 1 << 20
BCRYPT_CACHE_SIZE = 100  # as the toolkit (web/cache.go)
# A bcrypt hash of a password nobody has, checked for unknown users so that a wrong user name
# takes as long as a wrong password (the toolkit does the same).
_DUMMY_HASH = b"$2b$10$T.ZKm2VBehzfLrxqZD3uDOfPVBm3.EwdQLLJYTRf/ZRi1uBDrC46q"
_BCRYPT = re.compile(rb"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
            "client_ca_file", "client_allowed_sans", "min_version", "max_version",
            "cipher_suites", "prefer_server_cipher_suites", "curve_preferences")
HTTP_KEYS = ("http2", "headers")
RATE_KEYS = ("interval", "burst")
# Headers the toolkit lets a file add, with the values it allows (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
            "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's crypto/tls names (tls.CipherSuites(), TLS 1.0-1.2) -> OpenSSL names. The TLS 1.3 suites
# are accepted and, as in Go, change nothing (TLS 1.3 suites are not configurable there).
CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}
CLIENT_AUTH = {"": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(NetdiagError):
    """The web configuration file cannot be used: one line saying where and why."""


@dataclass(frozen=True)
class TLSSettings:
    cert_file: str | None = None
    cert: str | None = None
    key_file: str | None = None
    key: str | None = None
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    ciphers: tuple[str, ...] = ()  # OpenSSL names
    prefer_server_ciphers: bool = True
    curve: str | None = None  # OpenSSL name

    def files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.client_ca_file) if f]


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: TLSSettings | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    rate_interval: float = 0.0  # seconds between requests; 0: no limit
    rate_burst: int = 0
    http2: bool = True


# ---- reading the file ----------------------------------------------------------------------

def load(path: str) -> WebConfig:
    """Read and check FILE; WebConfigError (one line) when it cannot be used as it is."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise WebConfigError(f"web config {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise WebConfigError(f"web config {path}: larger than {MAX_FILE_BYTES} bytes")
    doc = _parse_yaml(path, raw)
    where = f"web config {path}"
    if doc is None:
        doc = {}
    _mapping(where, doc, TOP_KEYS)
    directory = os.path.dirname(os.path.abspath(path))
    tls = _tls(where, doc.get("tls_server_config"), directory)
    users = _users(where, doc.get("basic_auth_users"))
    headers, http2 = _http(where, doc.get("http_server_config"))
    interval, burst = _rate(where, doc.get("rate_limit"))
    return WebConfig(path=path, tls=tls, users=users, headers=headers, rate_interval=interval,
                     rate_burst=burst, http2=http2)


def _parse_yaml(path: str, raw: bytes) -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """Duplicate keys are errors, as with the toolkit's yaml.UnmarshalStrict."""

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a "
                                                        "scalar", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 construct_mapping)
    try:
        return yaml.load(raw, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WebConfigError(f"web config {path}: not valid YAML{at}: {problem}") from None


def _mapping(where: str, value: Any, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in keys:
            raise WebConfigError(f"{where}: unknown key {key!r} (known: {', '.join(keys)})")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "nothing"}.get(type(value),
                                                                          type(value).__name__)


def _string(where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise WebConfigError(f"{where}: expected a string, got {_kind(value)}")
    return str(value)


def _strings(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WebConfigError(f"{where}: expected a list, got {_kind(value)}")
    return [_string(where, v) for v in value]


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise WebConfigError(f"{where}: expected true or false, got {_kind(value)}")
    return value


def _join(directory: str, name: str | None) -> str | None:
    if not name:
        return None
    return name if os.path.isabs(name) else os.path.join(directory, name)


def _tls(where: str, section: Any, directory: str) -> TLSSettings | None:
    if section is None:
        return None
    where += ": tls_server_config"
    _mapping(where, section, TLS_KEYS)
    s = {k: v for k, v in section.items() if v is not None}
    text = {k: _string(f"{where}.{k}", s[k]) for k in
            ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
             "client_ca_file", "min_version", "max_version") if k in s}
    enabled = any(text.get(k) for k in ("cert", "key", "client_ca", "cert_file", "key_file",
                                         "client_ca_file", "client_auth_type"))
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = text.get(key, default)
        if name not in VERSIONS:
            raise WebConfigError(f"{where}: unknown TLS version {name!r} in {key} "
                                 f"(known: {', '.join(VERSIONS)})")
        versions[key] = name
    ciphers = []
    for name in _strings(f"{where}.cipher_suites", s.get("cipher_suites")):
        if name not in CIPHERS:
            raise WebConfigError(f"{where}: unknown cipher {name!r}")
        if CIPHERS[name]:
            ciphers.append(CIPHERS[name])
    curves = _strings(f"{where}.curve_preferences", s.get("curve_preferences"))
    for name in curves:
        if name not in CURVES:
            raise WebConfigError(f"{where}: unknown curve {name!r} (known: "
                                 f"{', '.join(CURVES)})")
    if len(curves) > 1:
        raise WebConfigError(f"{where}: curve_preferences lists {len(curves)} curves; netdiag "
                             "(Python's ssl module) can restrict the handshake to one curve "
                             "only: keep one, or remove the key for the library defaults")
    prefer = _bool(f"{where}.prefer_server_cipher_suites",
                   s.get("prefer_server_cipher_suites", True))
    sans = s.get("client_allowed_sans")
    allowed = tuple(_strings(f"{where}.client_allowed_sans", sans)) if sans is not None \
        else None
    auth = text.get("client_auth_type", "")
    if not enabled:  # the toolkit ignores the other keys without a certificate
        return None
    if not (text.get("cert_file") or text.get("cert")):
        raise WebConfigError(f"{where}: missing one of cert or cert_file")
    if not (text.get("key_file") or text.get("key")):
        raise WebConfigError(f"{where}: missing one of key or key_file")
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(f"{where}: client_auth_type {auth} asks for a client certificate "
                             "without verifying it, which Python's ssl module cannot do (the "
                             "toolkit calls it insecure): use RequireAndVerifyClientCert or "
                             "VerifyClientCertIfGiven with client_ca_file")
    if auth not in CLIENT_AUTH:
        raise WebConfigError(f"{where}: invalid client_auth_type {auth!r} (known: "
                             "NoClientCert, VerifyClientCertIfGiven, "
                             "RequireAndVerifyClientCert)")
    has_ca = bool(text.get("client_ca_file") or text.get("client_ca"))
    if has_ca and CLIENT_AUTH[auth] == ssl.CERT_NONE:
        raise WebConfigError(f"{where}: client CA's have been configured without a Client "
                             "Auth Policy (set client_auth_type)")
    if CLIENT_AUTH[auth] != ssl.CERT_NONE and not has_ca:
        raise WebConfigError(f"{where}: client_auth_type {auth} needs client_ca_file (or "
                             "client_ca) to verify client certificates against")
    return TLSSettings(
        cert_file=_join(directory, text.get("cert_file")), cert=text.get("cert") or None,
        key_file=_join(directory, text.get("key_file")), key=text.get("key") or None,
        client_ca_file=_join(directory, text.get("client_ca_file")),
        client_ca=text.get("client_ca") or None, client_auth=auth or "NoClientCert",
        client_allowed_sans=allowed, min_version=versions["min_version"],
        max_version=versions["max_version"], ciphers=tuple(ciphers),
        prefer_server_ciphers=prefer, curve=CURVES[curves[0]] if curves else None)


def _users(where: str, section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    where += ": basic_auth_users"
    if not isinstance(section, dict):
        raise WebConfigError(f"{where}: expected a mapping of user: bcrypt-hash")
    users = {}
    for user, hashed in section.items():
        name = _string(where, user)
        value = _string(f"{where}.{name}", hashed if hashed is not None else "").encode()
        if not _BCRYPT.match(value):
            raise WebConfigError(f"{where}: the password of {name!r} is not a bcrypt hash "
                                 "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        users[name] = value
    return users


def _http(where: str, section: Any) -> tuple[dict[str, str], bool]:
    if section is None:
        return {}, True
    where += ": http_server_config"
    _mapping(where, section, HTTP_KEYS)
    http2 = _bool(f"{where}.http2", section.get("http2", True))
    headers: dict[str, str] = {}
    raw = section.get("headers") or {}
    if not isinstance(raw, dict):
        raise WebConfigError(f"{where}.headers: expected a mapping")
    for name, value in raw.items():
        text = _string(f"{where}.headers", value if value is not None else "")
        if name not in HEADERS:
            raise WebConfigError(f"{where}: HTTP header {name!r} can not be configured")
        allowed = HEADERS[name]
        if allowed is not None and text not in allowed:
            raise WebConfigError(f"{where}: invalid value for {name}: expected one of "
                                 f"{', '.join(allowed)}, got {text!r}")
        if "\r" in text or "\n" in text:
            raise WebConfigError(f"{where}: header {name} contains a line break")
        if text:
            headers[name] = text
    return headers, http2


def _rate(where: str, section: Any) -> tuple[float, int]:
    if section is None:
        return 0.0, 0
    where += ": rate_limit"
    _mapping(where, section, RATE_KEYS)
    interval = duration(f"{where}.interval", section.get("interval", 0))
    burst = section.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise WebConfigError(f"{where}.burst: expected a whole number >= 0")
    return interval, burst


def duration(where: str, value: Any) -> float:
    """A Go duration ("1s", "250ms", "1m30s"; a bare number is nanoseconds) in seconds."""
    if isinstance(value, bool):
        raise WebConfigError(f"{where}: expected a duration such as 1s or 250ms")
    if isinstance(value, int):
        return value * 1e-9
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise WebConfigError(f"{where}: {text!r} is not a duration such as 1s or 250ms")
    if sign < 0:
        raise WebConfigError(f"{where}: negative duration {text!r}")
    return total


# ---- TLS -----------------------------------------------------------------------------------

def ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """The server context the file describes (None without TLS); WebConfigError when a
    certificate, key or CA cannot be loaded."""
    t = cfg.tls
    if t is None:
        return None
    where = f"web config {cfg.path}: tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = VERSIONS[t.min_version]
        ctx.maximum_version = VERSIONS[t.max_version]
    except (ValueError, ssl.SSLError) as exc:
        raise WebConfigError(f"{where}: TLS versions {t.min_version}..{t.max_version}: "
                             f"{exc}") from None
    with _pem_path(t.cert_file, t.cert) as cert, _pem_path(t.key_file, t.key) as key:
        try:
            ctx.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise WebConfigError(f"{where}: cannot read {exc.filename or cert}: "
                                 f"{exc.strerror}") from None
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: cannot load the certificate and key "
                                 f"({t.cert_file or 'cert'}, {t.key_file or 'key'}): "
                                 f"{_ssl_reason(exc)}") from None
    if t.ciphers:
        try:
            ctx.set_ciphers(":".join(t.ciphers))
        except ssl.SSLError as exc:
            raise WebConfigError(f"{where}: cipher_suites: {_ssl_reason(exc)}") from None
    if t.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if t.curve:
        try:
            ctx.set_ecdh_curve(t.curve)
        except (ValueError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: curve_preferences: {exc}") from None
    mode = CLIENT_AUTH[t.client_auth if t.client_auth != "NoClientCert" else ""]
    if mode != ssl.CERT_NONE:
        try:
            if t.client_ca_file:
                ctx.load_verify_locations(cafile=t.client_ca_file)
            else:
                ctx.load_verify_locations(cadata=t.client_ca)
        except FileNotFoundError as exc:
            raise WebConfigError(f"{where}: cannot read client_ca_file "
                                 f"{t.client_ca_file}: {exc.strerror}") from None
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: cannot load the client CA: "
                                 f"{_ssl_reason(exc)}") from None
        ctx.verify_mode = mode
    try:
        ctx.set_alpn_protocols(["http/1.1"])
    except (NotImplementedError, ssl.SSLError):
        pass
    return ctx


def _ssl_reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


class _pem_path:
    """A file name for ssl: the configured file, or inline PEM text in an anonymous
    in-memory file (memfd) that never touches the disk."""

    def __init__(self, path: str | None, text: str | None) -> None:
        self.path, self.text, self.fd = path, text, None

    def __enter__(self) -> str:
        if self.path:
            return self.path
        self.fd = os.memfd_create("netdiag-web-config", os.MFD_CLOEXEC)
        os.write(self.fd, (self.text or "").encode())
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def peer_allowed(cfg: WebConfig, peercert: dict | None) -> bool:
    """client_allowed_sans: the verified client certificate names one of them (DNS, IP,
    e-mail or URI), compared exactly as the toolkit does (IPs in canonical form)."""
    t = cfg.tls
    if t is None or t.client_allowed_sans is None:
        return True
    if not peercert:
        return False
    allowed = {_canonical(s) for s in t.client_allowed_sans}
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "email", "URI") and value in allowed:
            return True
        if kind == "IP Address" and _canonical(value.strip()) in allowed:
            return True
    return False


def _canonical(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


# ---- basic authentication and the rate limit -----------------------------------------------

class Authenticator:
    """basic_auth_users: bcrypt checks one at a time (they are deliberately slow), results
    cached by a digest of (user, hash, password) as the toolkit caches them."""

    def __init__(self) -> None:
        self.cache: dict[bytes, bool] = {}
        self.lock = threading.Lock()

    def check(self, users: dict[str, bytes], header: str | None) -> bool:
        """Blocking (bcrypt): call from a worker thread."""
        if not users:
            return True
        creds = parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        known = users.get(user)
        hashed = known if known is not None else _DUMMY_HASH
        key = hashlib.sha256(b"\0".join((user.encode("utf-8", "surrogateescape"), hashed,
                                         password))).digest()
        with self.lock:
            ok = self.cache.get(key)
            if ok is None:
                import bcrypt

                try:
                    ok = bcrypt.checkpw(password, hashed)
                except ValueError:
                    ok = False
                self._remember(key, ok)
        return bool(ok) and known is not None

    def _remember(self, key: bytes, ok: bool) -> None:
        if len(self.cache) >= BCRYPT_CACHE_SIZE:
            for victim in random.sample(list(self.cache), max(len(self.cache) // 10, 1)):
                del self.cache[victim]
        self.cache[key] = ok


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """Authorization: Basic base64(user:password) -> (user, password bytes)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (ValueError, TypeError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password


class RateLimiter:
    """rate_limit: a token bucket (one request per interval, bursts of `burst`)."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval, self.burst = interval, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def allow(self) -> bool:
        if self.interval <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.interval)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# ---- reloading -----------------------------------------------------------------------------

class Watcher:
    """The configuration in force. The file (and the certificates it names) are checked for
    changes at most once a second; a changed file is read again. A file that became invalid
    makes every request fail with 500 until it is fixed (as the toolkit does: fail closed),
    and says why once in the log."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.config = load(path)
        self.context = ssl_context(self.config)
        self.tls = self.context is not None
        self.error: str | None = None
        self.limiter = RateLimiter(self.config.rate_interval, self.config.rate_burst)
        self.stamp = self._stamp(self.config)
        self.checked = time.monotonic()

    def _stamp(self, cfg: WebConfig | None) -> tuple:
        files = [self.path] + (cfg.tls.files() if cfg is not None and cfg.tls else [])
        out = []
        for name in files:
            try:
                st = os.stat(name)
                out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((name, None))
        return tuple(out)

    def refresh(self, log) -> None:
        now = time.monotonic()
        if now - self.checked < 1.0:
            return
        self.checked = now
        stamp = self._stamp(self.config)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            cfg = load(self.path)
            ctx = ssl_context(cfg)
            if (ctx is not None) != self.tls:
                raise WebConfigError(f"web config {self.path}: TLS cannot be turned "
                                     f"{'on' if ctx else 'off'} without a restart")
        except WebConfigError as exc:
            if self.error != str(exc):
                log("web-config", f"{exc}; answering 500 until it is fixed")
            self.error = str(exc)
            return
        self.config, self.error = cfg, None
        if ctx is not None:
            self.context = ctx
        self.limiter = RateLimiter(cfg.rate_interval, cfg.rate_burst)
        self.stamp = self._stamp(cfg)
        log("web-config", f"web config {self.path} reloaded")
