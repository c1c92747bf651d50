"""One-click unsubscribe (RFC 8058): what an unsubscribe records, whichever way it came.

The milter adds ``List-Unsubscribe`` (a signed tracker URL, and a mailto on the bounce
domain when there is one) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
The tracker (a POST to the URL) and the bounce processor (mail to the mailto) both
call :func:`record`:

- one ``unsubscribe`` event for the message, with the recipient the token names and
  ``detail["how"]``: ``one-click`` (the mailbox provider's RFC 8058 POST),
  ``confirmation-page`` (the form of the tracker's page) or ``mailto``. Webhooks
  follow from the event (the store's trigger).
- the recipient on the suppression list of the login that sent the message (reason
  ``unsubscribe``), when that login's policy is ``refuse`` (the default). Adding is
  idempotent.

A message sent to several recipients carries one body, so one header for all of them:
its token names no recipient, and the event records the message only (nothing is
suppressed). Repeats: an unsubscribe of a recipient already suppressed by an
unsubscribe of the same message records nothing more; otherwise every request records
one event (at least once: a request whose suppression failed is answered with an
error and retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from smtpeter.events import Event
from smtpeter.store import Store

#: The suppression list's reason for an address that unsubscribed.
REASON = "unsubscribe"
#: The ways an unsubscribe comes, as detail["how"].
HOWS: tuple[str, ...] = ("one-click", "confirmation-page", "mailto")
#: The local part's prefix of the mailto form: unsubscribe+<token>@<bounce domain>.
MAILTO_PREFIX = "unsubscribe"


@dataclass(frozen=True)
class Outcome:
    #: An event was written (False: a repeat of one already recorded).
    recorded: bool
    #: The recipient was newly put on the login's suppression list.
    suppressed: bool
    #: The sending login, if the store has the message.
    login: str | None = None
    notes: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(
    store: Store,
    message_uid: str,
    recipient: str | None,
    how: str,
    *,
    user_agent: str | None = None,
    client_ip: str | None = None,
) -> Outcome:
    """Record one unsubscribe of ``recipient`` (None: the message had several) from
    the message ``message_uid``. The event is written before the suppression, so a
    failure in between loses nothing on a retry. Raises StoreError."""
    if how not in HOWS:
        raise ValueError(f"unknown unsubscribe method {how!r}")
    found = store.messages(uid=message_uid, limit=1)
    login_name = found[0].login if found else None
    login = store.get_login(login_name) if login_name else None
    notes: list[str] = []
    if not found:
        notes.append("message not in the store: event recorded, nothing suppressed")
    elif recipient is None:
        notes.append("message to several recipients: event recorded, nothing suppressed")
    elif login is None:
        notes.append("the message's login is gone: nothing suppressed")
    elif login.suppression != "refuse":
        notes.append(f"login {login.name}'s suppression policy is off: nothing suppressed")
    if recipient is not None and login is not None:
        entry = store.suppression(login.name, recipient)
        if entry is not None and entry.reason == REASON and entry.message_uid == message_uid:
            return Outcome(False, False, login.name, ["unsubscribed before: nothing recorded"])
    detail = {"how": how}
    store.record_events(
        [
            Event(
                type="unsubscribe",
                message_uid=message_uid,
                occurred_at=_now(),
                user_agent=user_agent,
                client_ip=client_ip,
                recipient=recipient,
                detail=detail,
            )
        ]
    )
    suppressed = False
    if recipient is not None and login is not None and login.suppression == "refuse":
        suppressed = store.suppress(login.name, recipient, REASON, message_uid=message_uid)
    return Outcome(True, suppressed, login_name, notes)
