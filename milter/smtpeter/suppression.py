"""The suppression list: which recorded bounces and complaints take an address off a
login's mail (applied by the bounce processor), and how the milter refuses it.

- A hard bounce (its reason says the address will never take mail: unknown user,
  unknown domain, null MX) suppresses the address at once.
- A complaint (the recipient marked the mail as spam) suppresses it at once.
- An unsubscribe (List-Unsubscribe, :mod:`smtpeter.unsubscribe`) suppresses it at
  once, with the reason ``unsubscribe``.
- A soft bounce never does by itself. Soft bounces about the mailbox itself
  (``mailbox-full``, ``mailbox-disabled``) are counted, once per message; when
  ``bounces.soft_bounce_limit`` messages to the address have bounced so, it is
  suppressed (an abandoned mailbox). Blocks, policy and spam verdicts, timeouts and
  other soft reasons say nothing about the address and are not counted.

Per login: an address suppressed for one login is still mailed by the others. What
the milter then does with a suppressed recipient is the login's policy
(``smtpeter login set --suppression refuse|off``): with ``refuse`` (the default) it
answers that RCPT with :func:`refusal`, so one suppressed recipient never blocks the
others of the message. ``smtpeter suppressions remove`` clears an entry.
"""

from __future__ import annotations

from smtpeter import addresses
from smtpeter.events import Event
from smtpeter.relay.headers import printable
from smtpeter.store import Store, Suppression

#: Soft-bounce reasons that are about the mailbox, counted towards the limit.
MAILBOX_REASONS = frozenset({"mailbox-full", "mailbox-disabled"})


def apply(store: Store, login: str, events: list[Event], soft_limit: int) -> list[str]:
    """Suppress what ``events`` call for, for ``login``; what was newly suppressed, as
    ``address (reason)`` for the log line."""
    added: list[str] = []
    for event in events:
        address = event.recipient
        if address is None:
            continue
        status = event.detail.get("status")
        reason = event.detail.get("reason") or "other"
        why: str | None = None
        if event.type == "complaint":
            why = "complaint"
            status = None
        elif event.type == "bounce" and event.detail.get("kind") == "hard":
            why = reason
        elif event.type == "bounce" and reason in MAILBOX_REASONS and soft_limit > 0:
            count = store.count_soft_bounce(login, address, event.message_uid, reason)
            if count >= soft_limit:
                why = f"soft-bounces: {reason}"
        if why is not None and store.suppress(
            login, address, why, status=status, message_uid=event.message_uid
        ):
            added.append(f"{addresses.key(address)} ({why})")
    return added


def refusal(entry: Suppression) -> tuple[str, str, str]:
    """The SMTP reply to a suppressed recipient: code, enhanced code and text, e.g.
    ``550 5.1.1 <a@example.org>: suppressed for login shop after a hard bounce (5.1.1
    user unknown) on 2026-11-30``."""
    status = entry.status or ""
    if entry.reason == "complaint":
        enhanced, why = "5.7.1", "a complaint"
    elif entry.reason == "unsubscribe":
        enhanced, why = "5.7.1", "the recipient unsubscribed"
    elif entry.reason.startswith("soft-bounces: "):
        enhanced = f"5{status[1:]}" if status[:1] in ("4", "5") else "5.2.2"
        what = entry.reason.removeprefix("soft-bounces: ").replace("-", " ")
        why = f"repeated soft bounces ({' '.join(filter(None, (status, what)))})"
    elif entry.status or entry.reason in ("user-unknown", "host-unknown", "not-accepted", "other"):
        enhanced = status if status[:1] == "5" else "5.1.1"
        what = entry.reason.replace("-", " ")
        why = f"a hard bounce ({' '.join(filter(None, (status, what)))})"
    else:
        # Added by an administrator, with their reason.
        enhanced, why = "5.7.1", f"being added to the list ({entry.reason})"
    text = (
        f"<{entry.address}>: suppressed for login {entry.login} after {why}"
        f" on {entry.created_at[:10]}"
    )
    return "550", enhanced, printable(text, 400)
