"""Outgoing mail: SMTP when configured, otherwise a development sink file.

The sink file is the only place a reset token is ever written outside the e-mail itself;
log lines mention that a message was sent, never its content.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from email.message import EmailMessage

from cloud.security import utcnow
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def send_mail(settings: CloudSettings, *, to: str, subject: str, body: str) -> None:
    if settings.smtp_host:
        msg = EmailMessage()
        msg["From"] = settings.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(msg)
        logger.info("mail %r sent via SMTP", subject)
        return
    if settings.environment == "production":
        logger.error("no SMTP configured in production; mail %r not delivered", subject)
        return
    sink = settings.dev_mail_sink
    sink.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(sink, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(f"--- {utcnow().isoformat()} To: {to} Subject: {subject}\n{body}\n")
    logger.info("mail %r written to the development sink", subject)
