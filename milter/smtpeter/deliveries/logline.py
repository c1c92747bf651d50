"""One Postfix log line read as a per-recipient delivery result.

Postfix logs one line per recipient and delivery attempt (``log_adhoc.c``)::

    QUEUEID: to=<rcpt>[, orig_to=<rcpt>], relay=R[, conn_use=N], delay=D,
        delays=a/b/c/d[, tls=...], dsn=X.Y.Z, status=WORD (reply)

and, when a message has been queued too long, one line for the whole message
(``qmgr_active.c``)::

    QUEUEID: from=<sender>, status=expired, returned to sender

The line may come with any of the headers the log paths of Debian 12 write, or with
none at all:

* ``2024-05-01T10:00:00.123456+02:00 host postfix/smtp[123]: MESSAGE``: rsyslog's
  RSYSLOG_FileFormat, Debian's rsyslog default since bookworm; also ``journalctl -o
  short-iso`` (``+0200``, no colon) and ``short-iso-precise``;
* ``May  1 10:00:00 host postfix/smtp[123]: MESSAGE``: RSYSLOG_TraditionalFileFormat
  (day padded with a space), and Postfix's own ``maillog_file`` written by postlogd
  (``msg_logger.c``: ``%b %d %H:%M:%S``, day padded with a zero), and ``journalctl -o
  short``. These carry no year and no zone: see ``now`` and ``tz`` of :func:`parse`;
* ``MESSAGE`` alone: journald's MESSAGE field; the program name is in
  SYSLOG_IDENTIFIER and the time in __REALTIME_TIMESTAMP, so use :func:`parse_message`.

Status words (``status=``) and what they become:

* ``sent`` -> ``delivered``; ``deferred`` -> ``deferred``; ``bounced`` -> ``failed``;
* ``SOFTBOUNCE`` (a bounce while ``soft_bounce = yes``) -> ``deferred``: Postfix keeps
  the message queued and retries it, and its DSN is turned into 4.X.X;
* ``expired`` and ``force-expired`` (``postsuper -e``): an :class:`Expiry`, not a
  :class:`DeliveryResult`. The line names the sender, not a recipient, and Postfix
  logs no per-recipient line after it: every recipient still deferred at that moment
  has failed, and only the caller (who knows which recipients are deferred) can say
  which ones;
* anything else (``deliverable``, ``undeliverable``, ``undeliverable-but-not-cached``
  and the DSN action words of ``sendmail -bv``, ``verify.c`` and ``trace.c``): None.
  Those are address probes and verbose-delivery reports, not deliveries.

Postfix logs no retry count: the n-th deferral of a recipient is the n-th deferred
result the caller has recorded for that queue id and recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

Status = Literal["delivered", "deferred", "failed"]

_STATUS: dict[str, Status] = {
    "sent": "delivered",
    "deferred": "deferred",
    "bounced": "failed",
    "SOFTBOUNCE": "deferred",
}


@dataclass(frozen=True)
class DeliveryResult:
    """One recipient's outcome of one delivery attempt, as Postfix logged it."""

    queue_id: str
    # As Postfix logs it (info_log_address_format): a local part that needs quotes
    # keeps them, e.g. "john doe"@example.org; the null address is "".
    recipient: str
    # The address before aliasing or rewriting; None when Postfix logged none (it
    # logs orig_to only when it differs from to, ignoring case).
    original_recipient: str | None
    status: Status
    # Postfix's own word: sent, deferred, bounced or SOFTBOUNCE.
    postfix_status: str
    dsn: str
    # mx.example.org[192.0.2.1]:25, none, local, virtual, a transport name...
    relay: str
    # Seconds from arrival to this result.
    delay: float
    # before queue manager / in queue manager / connection setup / transmission.
    delays: str
    # The text in the final parentheses: the remote reply, or Postfix's reason.
    reply: str
    # The delivery agent (the program name after the last slash): smtp, lmtp, local,
    # virtual, pipe, error, discard, retry, qmgr...; None without a syslog header.
    agent: str | None
    # The syslog_name's first part: postfix, postfix-out...; None when not known.
    instance: str | None
    # ISO 8601 UTC with microseconds (2024-05-01T08:00:00.123456Z); None when not known.
    logged_at: str | None
    # The syslog tag without the pid (postfix/smtp, postfix-out/relay/smtp); None
    # when not known.
    program: str | None = None


@dataclass(frozen=True)
class Expiry:
    """A message returned to its sender after too long in the queue: each recipient
    still deferred then has failed (Postfix logs no line per recipient)."""

    queue_id: str
    sender: str
    # postsuper -e (force-expired) rather than maximal_queue_lifetime.
    forced: bool
    agent: str | None
    instance: str | None
    logged_at: str | None
    program: str | None = None


LogEvent = DeliveryResult | Expiry

# Longer lines are not Postfix results (rsyslog's default maxMessageSize is 8k, and
# Postfix truncates the text it logs well below that): they are refused unread, which
# also bounds the time a hostile line can cost the patterns (quadratic at worst).
MAX_LINE = 8192

# Short ids are hex (microseconds, then inode); long ids (enable_long_queue_ids) are
# at least ten characters of time in base 52, a "z", then the inode in base 51.
_QUEUE_ID = r"(?P<qid>[0-9A-F]{6,}|[0-9A-Za-z]{10,}z[0-9A-Za-y]+)"
_SECONDS = r"\d+(?:\.\d+)?"

# An address as Postfix logs it: a quoted local part is taken whole, so that what it
# quotes (">, relay=") cannot end the address; _LOOSE_ADDRESS for the unquoted
# internal form (info_log_address_format = internal), where a lone quote may appear.
_ADDRESS = r'(?:"(?:[^"\\]|\\.)*"|[^"])*?'
_LOOSE_ADDRESS = r".*?"


def _result_pattern(address: str) -> re.Pattern[str]:
    return re.compile(
        _QUEUE_ID + rf": to=<(?P<to>{address})>,"
        rf"(?: orig_to=<(?P<orig>{address})>,)?"
        r" relay=(?P<relay>[^\s,]+),"
        r"(?: conn_use=\d+,)?"
        rf" delay=(?P<delay>{_SECONDS}),"
        rf" delays=(?P<delays>{_SECONDS}(?:/{_SECONDS}){{3}}),"
        # Fields newer Postfix versions add before dsn= (3.10: tls=).
        r"(?: [a-z_]+=[^\s,]*,)*"
        r" dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}),"
        r" status=(?P<status>[A-Za-z-]+) \((?P<reply>.*)\)",
        re.DOTALL,
    )


_RESULTS = (_result_pattern(_ADDRESS), _result_pattern(_LOOSE_ADDRESS))

_EXPIRY = re.compile(
    _QUEUE_ID + r": from=<(?P<sender>.*)>, status=(?P<status>expired|force-expired),"
    r" returned to sender",
    re.DOTALL,
)

_TAG = r" (?P<host>\S+) (?P<program>[^\s\[\]:]+)(?:\[\d+\])?: (?P<message>.*)"
_ISO_HEADER = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d))" + _TAG,
    re.DOTALL,
)
_BSD_HEADER = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)" + _TAG,
    re.DOTALL,
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_time(text: str) -> str | None:
    try:
        return _utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return None


def _bsd_time(
    month: str, day: str, hms: str, now: datetime | None, tz: tzinfo | None
) -> str | None:
    """The time of a header without year or zone, read as wall-clock time in ``tz``
    (None: this machine's zone) in the latest year that does not put it more than a
    day after ``now`` (None: the current time); Feb 29 goes to the last leap year."""
    number = _MONTHS.get(month)
    if number is None:
        return None
    try:
        hour, minute, second = (int(x) for x in hms.split(":"))
        reference = now if now is not None else datetime.now(UTC)
        local_now = reference.astimezone(tz) if tz is not None else reference.astimezone()
        year = local_now.year
        for _ in range(9):
            try:
                moment = datetime(year, number, int(day), hour, minute, second)
            except ValueError:
                if int(day) != 29 or number != 2:
                    return None
                year -= 1
                continue
            if moment > local_now.replace(tzinfo=None) + timedelta(days=1):
                year -= 1
                continue
            return _utc(moment.replace(tzinfo=tz) if tz is not None else moment.astimezone())
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _split_program(program: str | None) -> tuple[str | None, str | None]:
    """(instance, agent) of a syslog tag: postfix-out/smtp -> (postfix-out, smtp)."""
    if not program:
        return None, None
    parts = program.split("/")
    if len(parts) == 1:
        return None, parts[0]
    return parts[0] or None, parts[-1] or None


def parse_message(
    message: str,
    *,
    program: str | None = None,
    logged_at: datetime | None = None,
) -> LogEvent | None:
    """The result in one log message without its syslog header (journald's MESSAGE),
    or None when it is none. ``program`` is the syslog tag without the pid (journald's
    SYSLOG_IDENTIFIER, e.g. ``postfix/smtp``); ``logged_at`` an aware datetime (from
    __REALTIME_TIMESTAMP). Never raises."""
    stamp = None
    if logged_at is not None:
        try:
            stamp = _utc(logged_at)
        except (ValueError, OverflowError, OSError):
            stamp = None
    return _event(message, program, stamp)


def _event(message: str, program: str | None, logged_at: str | None) -> LogEvent | None:
    if len(message) > MAX_LINE:
        return None
    message = message.rstrip("\r\n")
    instance, agent = _split_program(program)
    found = _RESULTS[0].fullmatch(message) or _RESULTS[1].fullmatch(message)
    if found is not None:
        status = _STATUS.get(found["status"])
        if status is None:
            return None
        try:
            delay = float(found["delay"])
        except ValueError:
            return None
        return DeliveryResult(
            queue_id=found["qid"],
            recipient=found["to"],
            original_recipient=found["orig"],
            status=status,
            postfix_status=found["status"],
            dsn=found["dsn"],
            relay=found["relay"],
            delay=delay,
            delays=found["delays"],
            reply=found["reply"],
            agent=agent,
            instance=instance,
            logged_at=logged_at,
            program=program,
        )
    expired = _EXPIRY.fullmatch(message)
    if expired is not None:
        return Expiry(
            queue_id=expired["qid"],
            sender=expired["sender"],
            forced=expired["status"] == "force-expired",
            agent=agent,
            instance=instance,
            logged_at=logged_at,
            program=program,
        )
    return None


def parse(line: str, *, now: datetime | None = None, tz: tzinfo | None = None) -> LogEvent | None:
    """The delivery result or expiry in one log line, with or without a syslog header
    (see the module docstring for the formats), or None for any other line. Never
    raises.

    A header without a year (``May  1 10:00:00``) is read as wall-clock time in ``tz``
    (default: this machine's zone, as the syslog daemon that wrote it used) in the
    year that puts it at most a day after ``now`` (default: the current time), so a
    December line read in January lands in the year before. Pass ``now`` when reading
    old logs: the modification time of the file they came from is a good choice.
    """
    if len(line) > MAX_LINE:
        return None
    line = line.rstrip("\r\n")
    header = _ISO_HEADER.fullmatch(line)
    if header is not None:
        return _event(header["message"], header["program"], _iso_time(header["ts"]))
    header = _BSD_HEADER.fullmatch(line)
    if header is not None:
        stamp = _bsd_time(header["mon"], header["day"], header["hms"], now, tz)
        return _event(header["message"], header["program"], stamp)
    return _event(line, None, None)
