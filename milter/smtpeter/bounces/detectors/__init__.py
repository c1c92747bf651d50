"""One detector per bounce format, each ``detect(msg) -> list[Failure]`` over a parsed
:class:`~smtpeter.bounces.message.BounceMessage`; :mod:`smtpeter.bounces.detect` runs
them in order."""

from __future__ import annotations

from collections.abc import Callable

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure

Detector = Callable[[BounceMessage], list[Failure]]
