"""Why a delivery failed, and whether that makes the bounce hard or soft.

The detectors read what a report says: the recipient, its status code, the remote
server's reply. This module judges it the way the established bounce parsers do
(Sisimai's reasons, flufl.bounce's hard/soft split): by the reason, never by the
status class alone: hard takes a reason that says the address is dead, and a reply
that names no reason (``other``) is soft whatever its code. A full mailbox is soft
whatever its code; a
block or a spam verdict says nothing about the address, so it is soft too; an unknown
user or domain is hard, but only under a permanent status (or none): a 4.x.x
report, such as Postfix's "Host or domain name not found ... try again" after the
queue lifetime ran out, proves nothing about the address. A refused sender
(x.1.7, x.1.8: the sender's address or domain) says nothing about the recipient.
Nor does an address verdict in reply to MAIL FROM, before any recipient was named
(``sender-rejected``), or one given after DATA (:mod:`smtpeter.bounces.phase` reads
which command a refusal answered): the server had taken the recipient at RCPT and
then refused the message ("550 Unknown user" in reply to end of DATA is how Japanese
mobile carriers answer for a sender the recipient's filter refuses), so it is
``content-rejected``, unless the server's own code names the address (x.1.x) or the
reply is Yahoo's ("delivery error: dd ..."), which checks its mailboxes only after
DATA.

The reasons, in the order the diagnostic text is read (the first that matches wins;
then the status code's subject and detail decide):

========================  =====  ===================================================
reason                    kind   what it means
========================  =====  ===================================================
``mailbox-full``          soft   over quota, out of storage (x.2.2)
``message-too-large``     soft   over the remote size limit (x.2.3, x.3.4)
``expired``               soft   gave up retrying: queue lifetime, timeouts (x.4.7)
``spam-detected``         soft   the content was judged spam
``blocked``               soft   the sending IP or domain is refused (block lists,
                                 no reverse DNS)
``content-rejected``      soft   virus, attachment, or content refused (x.6.x);
                                 an address refused after DATA (the
                                 recipient's filter)
``sender-rejected``       soft   the sender's address or domain was refused (x.1.7,
                                 x.1.8); an address refused in reply to MAIL FROM
``policy``                soft   relaying, authentication, DMARC/SPF (x.7.x)
``mailbox-disabled``      soft   mailbox suspended or disabled (x.2.1)
``host-unknown``          hard   the domain does not exist or has no mail host
                                 (5.1.2, 5.4.4)
``user-unknown``          hard   no such mailbox (5.1.1, 5.1.10, 5.1.6 moved; 5.1.0
                                 and 5.1.3, a destination address refused)
``not-accepted``          hard   the domain accepts no mail at all (null MX)
``network-error``         soft   connection failures, too many connections (other
                                 x.4.x)
``system-error``          soft   the remote system failed (x.3.x, x.5.x)
``other``                 soft   nothing known (a reply no reason above matches)
========================  =====  ===================================================
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final, Literal

from smtpeter.bounces.phase import Stage
from smtpeter.bounces.report import Failure

Reason = Literal[
    "mailbox-full",
    "message-too-large",
    "expired",
    "spam-detected",
    "blocked",
    "content-rejected",
    "sender-rejected",
    "policy",
    "mailbox-disabled",
    "host-unknown",
    "user-unknown",
    "not-accepted",
    "network-error",
    "system-error",
    "other",
]

#: The reasons that say the address itself will never take mail.
HARD: Final[frozenset[str]] = frozenset({"host-unknown", "user-unknown", "not-accepted"})

# Read in this order: a reason that must never be hard comes before the patterns of
# the hard ones that the same reply may also contain ("mailbox unavailable: over
# quota"). Matched against the lower-cased diagnostic text.
_PATTERNS: Final[tuple[tuple[Reason, str], ...]] = (
    (
        "mailbox-full",
        r"mail ?(?:box|folder|file) (?:is )?(?:full|over ?quota)|over ?(?:disk )?quota"
        r"|quota (?:exceeded|full|violation)|(?:disk|mailbox|storage) quota"
        r"|exceed(?:s|ed|ing)? (?:the |his |her |its |their |your )?(?:mailbox |disk )?"
        r"(?:storage|quota)|reached (?:the |its )?(?:disk )?quota|mailbox size limit"
        r"|insufficient (?:disk |system )?(?:space|storage)|out of (?:disk )?(?:space|storage)"
        r"|(?:mailbox|inbox|account|user) (?:is )?full|storage (?:space )?(?:limit|quota)"
        r"|too many messages in (?:this|the) mailbox",
    ),
    (
        "message-too-large",
        r"message (?:is )?too (?:large|big)|(?:message|mail) size (?:exceeds|limit)"
        r"|exceed(?:s|ed)? (?:the )?(?:maximum |max )?(?:allowed )?(?:inbound )?(?:message )?size"
        r"|size exceeds|mail too large|message length exceeds",
    ),
    (
        "expired",
        r"in the queue too long|too long in (?:the )?queue"
        r"|retry time(?:out)? (?:not reached|exceeded)|message expired"
        r"|delivery time expired|expired in queue|timed? ?out"
        r"|after \d+ attempt\(?s?\)?|(?:for|period of) (?:more than )?\d+ (?:hour|day)",
    ),
    (
        "sender-rejected",
        r"sender (?:address |domain )?(?:was |is )?(?:rejected|refused|denied|not allowed|unknown"
        r"|invalid"
        r"|verify failed)|(?:domain of|unknown|invalid|bad) sender(?:'s)?(?: address| domain)?"
        r"|sender (?:address |domain )?(?:does not exist|doesn'?t exist|not found|must exist)"
        r"|mail from (?:address |domain )?(?:rejected|refused|invalid|not (?:found|allowed))",
    ),
    (
        "spam-detected",
        r"\bspam\b|junk mail|unsolicited|bulk mail|spam ?score|suspected spam",
    ),
    (
        "blocked",
        r"blocked|black ?list|block ?list|deny ?list|spamhaus|\brbl\b|dnsbl|\bsorbs\b"
        r"|(?<!not )listed (?:at|on|in|by)|reputation|client host .*rejected"
        r"|connection (?:refused|rejected) (?:by|due to) policy|\bptr\b|reverse (?:dns|lookup)"
        r"|\brdns\b",
    ),
    (
        "content-rejected",
        r"virus|malware|attachment|content (?:rejected|refused|not allowed)"
        r"|message content|forbidden content|prohibited (?:content|file)"
        r"|refused due to recipient preferences",
    ),
    (
        "policy",
        r"policy|not authori[sz]ed|unauthenticated|\bdmarc\b|\bspf\b|\bdkim\b"
        r"|relay(?:ing)? (?:denied|not permitted|prohibited)|not permitted"
        r"|sender (?:address )?rejected|authentication required|rate limit|access denied"
        r"|too many recipients",
    ),
    (
        "network-error",
        r"too many (?:[a-z]+ ){0,2}(?:connections|sessions)"
        # The name server failed (Postfix's "Malformed or unexpected name server
        # reply", a resolver's temporary failure): the domain may well exist.
        r"|malformed or unexpected name server reply|temporary failure in name resolution",
    ),
    (
        "mailbox-disabled",
        r"(?:mailbox|account|user|address) (?:has been |is |was )?"
        r"(?:disabled|inactive|suspended|deactivated|closed|locked)"
        r"|no longer (?:active|in use|available|valid)",
    ),
    (
        "host-unknown",
        r"host (?:or domain name )?not found|unknown host|host unknown|unknown domain"
        r"|dns lookup failure: host \S+ not found"
        r"|domain (?:name )?(?:not found|does not exist|doesn'?t exist|is invalid)"
        r"|no (?:mx|mail exchanger|such domain)|unrouteable (?:mail )?domain"
        r"|name service error|nxdomain|mail domain does not exist|no such host"
        r"|non-?existent (?:host|domain)|domain (?:name )?\S+ (?:couldn'?t|could not) be found",
    ),
    (
        "user-unknown",
        r"user unknown|unknown (?:user|recipient|mailbox|address)|no such (?:user|mailbox"
        r"|recipient|address|account)|user not found|(?:mailbox|recipient|address|user"
        r"|account)(?: name)? (?:is )?(?:unknown|not found|does not exist|doesn'?t exist"
        r"|invalid|unavailable|not available|not valid)|(?:invalid|non-?existent|bad)"
        r" (?:recipient|mailbox|address|user)|does not exist|doesn'?t have an? .{0,40}account"
        r"|no mailbox|not a valid (?:recipient|mailbox|user)|unrouteable address"
        r"|recipient not recognized|addressee unknown|recipnotfound"
        r"|not listed in (?:the )?(?:domino directory|address book|public name)"
        r"|invalid final delivery userid|user not known|does not have a final email delivery point"
        r"|recipient name is not recognized|no longer accepts mail"
        r"|address (?:couldn'?t|could not|cannot) be found",
    ),
    (
        "not-accepted",
        r"does not accept mail|null mx|no mail service|accepts no mail|no smtp service"
        r"|system not accept",
    ),
)
_DBEB: Final = "recipient address rejected: access denied"
_TEXT: Final = tuple((reason, re.compile(pattern)) for reason, pattern in _PATTERNS)

# By the status code's subject and detail (RFC 3463), when the text said nothing.
_CODES: Final[dict[str, Reason]] = {
    "1.7": "sender-rejected",
    "1.8": "sender-rejected",
    "1.0": "user-unknown",
    "1.1": "user-unknown",
    "1.3": "user-unknown",
    "1.6": "user-unknown",
    "1.10": "user-unknown",
    "1.2": "host-unknown",
    "4.4": "host-unknown",
    "2.1": "mailbox-disabled",
    "2.2": "mailbox-full",
    "2.3": "message-too-large",
    "3.4": "message-too-large",
    "4.7": "expired",
}
_SUBJECTS: Final[dict[str, Reason]] = {
    "3": "system-error",
    "4": "network-error",
    "5": "system-error",
    "6": "content-rejected",
    "7": "policy",
}


def reason_of(status: str | None, diagnostic: str | None) -> Reason:
    """The reason of one failed recipient, from the remote reply and the status code."""
    if status and status.partition(".")[2] in ("1.7", "1.8"):
        # The sender's address or domain: whatever the reply adds, not the recipient's.
        return "sender-rejected"
    if diagnostic:
        text = " ".join(diagnostic.lower().split())
        if status and status.endswith(".4.1") and _DBEB in text:
            # Exchange Online's directory-based edge blocking: no such recipient in
            # the tenant (5.4.1). Postfix's access maps say the same words with 5.7.1.
            return "user-unknown"
        for reason, pattern in _TEXT:
            if pattern.search(text):
                return reason
    if status:
        klass, _, rest = status.partition(".")
        by_code = _CODES.get(rest)
        # A code alone says an address is dead only when the failure is permanent: a
        # transient 4.4.4 "unable to route" or 4.1.1 is no proof of it.
        if by_code is not None and (klass == "5" or by_code not in HARD):
            return by_code
        subject = rest.partition(".")[0]
        if subject in _SUBJECTS:
            return _SUBJECTS[subject]
    return "other"


def kind_of(reason: Reason, status: str | None) -> Literal["hard", "soft"] | None:
    """Hard only for a reason that says the address will never take mail, and never
    under a transient (4.x.x) status; soft otherwise. None for ``other`` without a
    status: nothing is known."""
    klass = status[0] if status and status[0] in "45" else None
    if reason == "other" and klass is None:
        return None
    if reason in HARD and klass != "4":
        return "hard"
    return "soft"


# Yahoo takes every RCPT and refuses an unknown mailbox after DATA: "554 delivery
# error: dd This user doesn't have a yahoo.com account".
_LATE_CHECK: Final = re.compile(r"delivery error: dd\b")


def staged_reason(
    reason: Reason, stage: Stage | None, status: str | None, diagnostic: str | None
) -> Reason:
    """The reason of a failure by the command it answered: an address verdict in reply
    to MAIL FROM is about the sender (``sender-rejected``); after DATA it is the
    recipient's filter (``content-rejected``), unless the server's own x.1.x code or
    Yahoo's late mailbox check says the address is bad."""
    if reason not in HARD or stage is None:
        return reason
    if stage == "mail":
        return "sender-rejected"
    if status and status.partition(".")[2].startswith("1."):
        return reason
    if diagnostic and _LATE_CHECK.search(" ".join(diagnostic.lower().split())):
        return reason
    return "content-rejected"


def judge(failure: Failure, stage: Stage | None = None) -> Failure:
    """The failure with its reason, and its kind decided by it (hard or soft; left
    ``unknown`` when nothing is known). Delays and auto-replies are left as they are.
    ``stage``: the command the bounce shows the refusal answered (MAIL FROM, DATA)."""
    if failure.kind not in ("hard", "soft", "unknown"):
        return failure
    reason = staged_reason(
        reason_of(failure.status, failure.diagnostic), stage, failure.status, failure.diagnostic
    )
    kind = kind_of(reason, failure.status)
    if kind is None:
        # No status and a reply that says nothing: the detector knew it failed (an
        # Exim "permanent error" list), not that the address is dead.
        return (
            failure if failure.kind == "unknown" else replace(failure, kind="soft", reason=reason)
        )
    return replace(failure, kind=kind, reason=reason)
