"""Why sync is not working: one reason code per cause, an operator sentence for each.

The code goes to the status page, the `sync.status` event, `/api/status` and the retained
`DeviceStatus` the cloud shows (`sync_reason`, `sync_message`); it is logged once each time
it changes, never on every retry. Sentences say what is wrong and what to do, and never hold a
secret.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

from edge.config import SyncSettings

logger = logging.getLogger(__name__)

OK = "ok"
CONNECTING = "connecting"
IDENTITY_MISMATCH = "identity_mismatch"
CREDENTIALS_REFUSED = "credentials_refused"
DEVICE_REVOKED = "device_revoked"
NOT_AUTHORISED = "not_authorised"
BROKER_UNREACHABLE = "broker_unreachable"
TLS_ERROR = "tls_error"
BROKER_REFUSED = "broker_refused"
DISCONNECTED = "disconnected"
UPLOAD_UNAUTHORISED = "upload_unauthorised"

SENTENCES = {
    OK: "Connected: results go to the cloud.",
    CONNECTING: "Connecting to the cloud's broker {broker}.",
    IDENTITY_MISMATCH: "{detail}",
    CREDENTIALS_REFUSED: (
        "The broker refused this appliance's user name or password ({detail}). Ask an "
        "administrator for a new enrollment bundle and run microplate-edge enroll."
    ),
    DEVICE_REVOKED: (
        "This device has been revoked in the cloud: the broker and the API refuse it. Ask an "
        "administrator to provision it again, then run microplate-edge enroll with the new bundle."
    ),
    NOT_AUTHORISED: (
        "The broker refused what this appliance sent or asked for ({detail}): its site/device "
        "id does not match its credentials, or its rights were withdrawn. Enroll it again with "
        "its own bundle."
    ),
    BROKER_UNREACHABLE: (
        "The cloud's broker {broker} cannot be reached ({detail}). Check the network and "
        "sync.broker_url; results wait here and go out when it is back."
    ),
    TLS_ERROR: (
        "The secure connection to the broker {broker} failed ({detail}). Check sync.ca_cert_file "
        "(the CA from the enrollment bundle) and this appliance's clock."
    ),
    BROKER_REFUSED: "The broker {broker} refused the connection ({detail}).",
    DISCONNECTED: "The connection to the broker {broker} was lost ({detail}); reconnecting.",
    UPLOAD_UNAUTHORISED: (
        "The cloud refused this appliance's token for image uploads ({detail}): it expired or "
        "was revoked. Results still sync, without images; enroll the appliance again."
    ),
}


@dataclass(frozen=True)
class Reason:
    code: str
    message: str

    @property
    def ok(self) -> bool:
        return self.code == OK


def reason(code: str, settings: SyncSettings, detail: str = "") -> Reason:
    broker = f"{settings.host}:{settings.port}"
    return Reason(code, SENTENCES[code].format(broker=broker, detail=detail or "no detail"))


def probe(settings: SyncSettings, timeout: float = 3.0) -> tuple[str, str]:
    """Why a connection attempt failed: (BROKER_UNREACHABLE | TLS_ERROR, detail), or
    (BROKER_REFUSED, ...) when TCP and TLS work and only MQTT did not answer. paho's
    on_connect_fail does not carry the exception, so the worker thread asks the network
    itself, once per failure, off paho's thread."""
    try:
        sock = socket.create_connection((settings.host, settings.port), timeout=timeout)
    except socket.gaierror as exc:
        return BROKER_UNREACHABLE, f"name not resolved: {exc.strerror}"
    except TimeoutError:
        return BROKER_UNREACHABLE, "timed out"
    except OSError as exc:
        return BROKER_UNREACHABLE, exc.strerror or type(exc).__name__
    with sock:
        if not settings.tls:
            return BROKER_REFUSED, "no MQTT answer"
        try:
            context = ssl.create_default_context(
                cafile=str(settings.ca_cert_file) if settings.ca_cert_file else None
            )
            with context.wrap_socket(sock, server_hostname=settings.host):
                return BROKER_REFUSED, "no MQTT answer over TLS"
        except ssl.SSLCertVerificationError as exc:
            return TLS_ERROR, exc.verify_message or "certificate not trusted"
        except ssl.SSLError as exc:
            return TLS_ERROR, exc.reason or type(exc).__name__
        except FileNotFoundError:
            return TLS_ERROR, f"CA file {settings.ca_cert_file} not found"
        except OSError as exc:
            # TCP worked, the handshake did not: a plain (non-TLS) listener resets it.
            why = exc.strerror or type(exc).__name__
            return TLS_ERROR, f"{why} during the TLS handshake; is {settings.port} a TLS port?"


class ReasonLog:
    """Logs a reason once when it changes (warning when bad, info when back to ok)."""

    def __init__(self) -> None:
        self.current: Reason | None = None

    def update(self, new: Reason) -> bool:
        if self.current == new:
            return False
        if new.ok or new.code == CONNECTING:
            logger.info("sync: %s", new.message)
        else:
            logger.warning("sync problem [%s]: %s", new.code, new.message)
        self.current = new
        return True
