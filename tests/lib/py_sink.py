#!/usr/bin/python3
"""py_sink.py - a scriptable receiving MX for outrelay's integration tests (python3-aiosmtpd).

Run as its own process by harness.PySink; never imported by the tests themselves. It listens on one
IP:port, optionally offers STARTTLS with a given certificate, answers commands according to a reply
script, and appends one JSON line per event to --record:

  {"event": "message", "peer": [ip, port], "helo": ..., "tls_version": ..., "tls_cipher": ...,
   "mail_from": ..., "mail_options": [...], "rcpt_tos": [...], "data_b64": ..., "time": ...}
  {"event": "reply", "cmd": "RCPT", "arg": ..., "reply": "550 5.1.1 ...", "peer": ..., ...}

A "message" line is written and flushed *before* the 250 reply to the end of DATA, so a client that
saw 250 can rely on the record being there. Scripted replies (--script JSON) are a list of rules:

  [{"on": "DATA", "reply": "451 4.3.0 try later", "count": 1}]   first DATA gets 451, later ones 250
  [{"on": "RCPT", "reply": "550 5.1.1 no such user"}]            every RCPT refused (no count: forever)
  [{"on": "RCPT", "match": "bad@", "reply": "550 5.1.1 no"}]      only recipients containing "bad@"
  [{"on": "DATA", "peer": "127.0.0.3", "reply": "451 ..."}]       only clients from that address

"on" is EHLO, MAIL, RCPT or DATA (DATA = the reply after the message data). The first rule that
matches and still has a count left answers; otherwise the command is accepted normally.
--max-line-length N makes it a strict receiver: a message with a line longer than N octets
(without CRLF and the dot added for transparency, RFC 5321 4.5.3.1.6; N=998 is the RFC limit)
gets "500 5.5.2 Line too long" (recorded as a "reply" event). Without it aiosmtpd's own limit
applies.
--requiretls makes it offer REQUIRETLS (RFC 8689) after STARTTLS and take the MAIL parameter
there (recorded in mail_options); aiosmtpd itself knows neither.
Stop the process with SIGINT (aiosmtpd ignores SIGTERM; this script handles both anyway).
"""
import argparse
import asyncio
import base64
import json
import os
import re
import signal
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult


class Script:
    """The reply rules; shared by all sessions, guarded by a lock (sessions run on one loop, but
    the lock keeps the counting obviously correct)."""

    def __init__(self, rules):
        self.rules = [dict(r) for r in (rules or [])]
        self.lock = threading.Lock()

    def reply_for(self, cmd, arg, peer=None):
        with self.lock:
            for rule in self.rules:
                if rule.get("on", "").upper() != cmd:
                    continue
                if rule.get("peer") and rule["peer"] != peer:
                    continue
                if rule.get("match") and rule["match"] not in (arg or ""):
                    continue
                count = rule.get("count")
                if count is not None:
                    if count <= 0:
                        continue
                    rule["count"] = count - 1
                return rule["reply"]
        return None


class Recorder:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, obj):
        obj.setdefault("time", time.time())
        line = json.dumps(obj, sort_keys=True) + "\n"
        with self.lock:
            self.fh.write(line)
            self.fh.flush()
            os.fsync(self.fh.fileno())


def tls_info(session):
    """(version, cipher) of a session after STARTTLS, else (None, None)."""
    extra = session.ssl
    if not extra:
        return None, None
    obj = extra.get("ssl_object")
    if obj is not None:
        cipher = obj.cipher()
        return obj.version(), cipher[0] if cipher else None
    cipher = extra.get("cipher")
    if cipher:
        return cipher[1], cipher[0]
    return "unknown", None


def client_subject(session):
    """The subject CN of the client certificate presented in this session, or None."""
    obj = (session.ssl or {}).get("ssl_object") if session.ssl else None
    cert = obj.getpeercert() if obj is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class Handler:
    def __init__(self, script, recorder, max_line_length=None, requiretls=False):
        self.script = script
        self.rec = recorder
        self.max_line_length = max_line_length
        self.requiretls = requiretls

    def _scripted(self, session, cmd, arg):
        reply = self.script.reply_for(cmd, arg, (session.peer or (None,))[0])
        if reply is not None:
            version, cipher = tls_info(session)
            self.rec.write({"event": "reply", "cmd": cmd, "arg": arg, "reply": reply,
                            "peer": list(session.peer or ()), "tls_version": version})
        return reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        reply = self._scripted(session, "EHLO", hostname)
        if reply is not None:
            return [reply]
        session.host_name = hostname
        if self.requiretls and tls_info(session)[0]:
            responses.insert(1, "250-REQUIRETLS")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self._scripted(session, "MAIL", address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        if getattr(server, "requiretls_seen", False):
            envelope.mail_options.append("REQUIRETLS")
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._scripted(session, "RCPT", address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self._scripted(session, "DATA", envelope.mail_from)
        if reply is not None:
            return reply
        version, cipher = tls_info(session)
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if self.max_line_length is not None:
            longest = max((len(line) for line in data.split(b"\r\n")), default=0)
            if longest > self.max_line_length:
                reply = "500 5.5.2 Line too long"
                self.rec.write({"event": "reply", "cmd": "DATA", "arg": envelope.mail_from,
                                "reply": reply, "peer": list(session.peer or ()),
                                "longest_line": longest, "tls_version": version})
                return reply
        self.rec.write({
            "event": "message",
            "peer": list(session.peer or ()),
            "helo": session.host_name,
            "tls_version": version,
            "tls_cipher": cipher,
            "tls_client_subject": client_subject(session),
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "rcpt_tos": list(envelope.rcpt_tos),
            "data_b64": base64.b64encode(data).decode("ascii"),
        })
        return "250 2.0.0 OK queued"


class SinkSMTP(SMTP):
    """aiosmtpd answers 555 to MAIL parameters it does not know: with --requiretls, REQUIRETLS
    is taken off the line over TLS and handed to handle_MAIL as server.requiretls_seen."""

    async def smtp_MAIL(self, arg):
        self.requiretls_seen = False
        if arg and self.event_handler.requiretls and self._tls_protocol is not None:
            stripped = re.sub(r"\s+REQUIRETLS(?=\s|$)", "", arg, flags=re.I)
            self.requiretls_seen = stripped != arg
            arg = stripped
        return await super().smtp_MAIL(arg)


class SinkController(Controller):
    """Controller whose SMTP instances get our options (SMTPUTF8 on; AUTH only with --auth)."""

    def __init__(self, handler, tls_context, auth_kwargs=None, **kwargs):
        self._tls = tls_context
        self._auth = auth_kwargs or {}
        super().__init__(handler, **kwargs)

    def factory(self):
        smtp = SinkSMTP(self.handler, hostname=self.SMTP_kwargs.get("hostname"),
                    tls_context=self._tls, require_starttls=False,
                    enable_SMTPUTF8=True, decode_data=False,
                    data_size_limit=64 * 1024 * 1024, auth_require_tls=True, **self._auth)
        if self.handler.max_line_length is not None:
            # the handler judges lines itself: aiosmtpd's limit (1001 with CRLF, so 999
            # octets pass) must not answer first
            smtp.line_length_limit = 1 << 20
        return smtp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="IP:PORT")
    ap.add_argument("--record", required=True, help="JSON-lines file to append events to")
    ap.add_argument("--hostname", default="py-sink.test", help="name in greeting and EHLO reply")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require a client certificate issued by this CA")
    ap.add_argument("--script", default="[]", help="JSON list of reply rules")
    ap.add_argument("--max-line-length", type=int,
                    help="refuse messages with a longer line (octets without CRLF): 500 5.5.2")
    ap.add_argument("--requiretls", action="store_true",
                    help="offer REQUIRETLS over TLS and accept the MAIL parameter")
    ap.add_argument("--auth", help="USER:PASSWORD[:MECH,...]: require AUTH (after STARTTLS) "
                                   "with these credentials, offering only the MECHs given")
    args = ap.parse_args()

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        ctx.verify_mode = ssl.CERT_NONE
        if args.tls_client_ca:
            ctx.load_verify_locations(args.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED

    handler = Handler(Script(json.loads(args.script)), Recorder(args.record),
                      args.max_line_length, args.requiretls)
    auth_kwargs = {}
    if args.auth:
        user, password, *mechs = args.auth.split(":")
        offered = [m.upper() for m in (mechs[0].split(",") if mechs else ["PLAIN", "LOGIN"])]

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (getattr(auth_data, "login", b"") == user.encode() and
                  getattr(auth_data, "password", b"") == password.encode())
            handler.rec.write({"event": "auth", "mechanism": mechanism, "ok": ok,
                               "login": getattr(auth_data, "login", b"").decode("utf-8",
                                                                              "replace")})
            return AuthResult(success=ok, handled=False)
        auth_kwargs = {"authenticator": authenticator, "auth_required": True,
                       "auth_exclude_mechanism": [m for m in ("PLAIN", "LOGIN")
                                                  if m not in offered]}
    controller = SinkController(handler, ctx, hostname=host, port=int(port),
                                server_hostname=args.hostname, ready_timeout=10,
                                auth_kwargs=auth_kwargs)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    controller.start()
    print(f"py_sink listening on {host}:{port} tls={'yes' if ctx else 'no'}", flush=True)
    while not stop.wait(0.2):
        pass
    controller.stop()
    print("py_sink stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
