"""SMTP clients the tests, the demo and the benchmarks use against a lab host's real Exim."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from lab.exim import MAILBOX_PASSWORD


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


def relay_attempt(server: str, source: str, *, port: int = 25, sender: str = "someone@external.example",
                  rcpt: str = "victim@example.net", timeout: float = 10.0) -> Reply:
    """Try to relay without AUTH from ``source`` (a loopback address this machine owns).

    Returns the reply to ``RCPT TO`` a foreign domain: 250 means the server relays for ``source``.
    """
    with smtplib.SMTP(server, port, timeout=timeout, source_address=(source, 0)) as smtp:
        smtp.ehlo("client.example")
        code, text = smtp.mail(sender)
        if code >= 300:
            return Reply(code, text.decode(errors="replace"))
        code, text = smtp.rcpt(rcpt)
        return Reply(code, text.decode(errors="replace"))


def authenticated_attempt(server: str, source: str, user: str, *, port: int = 587,
                          password: str = MAILBOX_PASSWORD, rcpt: str = "friend@example.net",
                          timeout: float = 10.0) -> Reply:
    """Submit as an authenticated user (STARTTLS, then AUTH), as a well-configured mail client does."""
    context = ssl.create_default_context()
    # The lab's certificate is self-signed; the check here is AUTH, not PKI.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(server, port, timeout=timeout, source_address=(source, 0)) as smtp:
        smtp.ehlo("client.example")
        smtp.starttls(context=context)
        smtp.ehlo("client.example")
        smtp.login(user, password)
        code, text = smtp.mail(user)
        if code >= 300:
            return Reply(code, text.decode(errors="replace"))
        code, text = smtp.rcpt(rcpt)
        return Reply(code, text.decode(errors="replace"))


def banner(server: str, port: int = 25, timeout: float = 5.0) -> Reply:
    with smtplib.SMTP(timeout=timeout) as smtp:
        code, text = smtp.connect(server, port)
        return Reply(code, text.decode(errors="replace"))
