"""The feature pipeline: which transforms run over a message's text parts, in order.

HTML parts get inlinecss, then trackclicks (so links in the final markup are
tracked), then trackopens; text/plain parts get trackclicks only when
``features.track_plain_text`` is on. Runs on the relay's feature thread, never on
libmilter's threads (see REFERENCE.md: lxml-based code called from libmilter's
worker threads segfaults under load).

What a library cannot handle is skipped, not failed: a part too deep or too large
for the inliner, or one the inliner raises on, goes out as it was (the other
features still apply to it), and the reason is returned so that the milter logs
and records it. A poison part must neither crash the process nor make every retry
of the message a tempfail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from smtpeter.config import Config
from smtpeter.features import FeatureSet
from smtpeter.features.inlinecss import make_inliner, not_inlinable
from smtpeter.features.trackclicks import track_links, track_text_links
from smtpeter.features.trackopens import add_pixel
from smtpeter.relay.mime import Rewrite, rewrite_text_parts
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.signing import Signer

Transform = Callable[[str], str]
log = logging.getLogger("smtpeter.milter")

# The features that rewrite message content, in the order they are applied.
CONTENT_FEATURES: tuple[str, ...] = ("inlinecss", "trackclicks", "trackopens")


@dataclass(frozen=True)
class Options:
    """Per-message settings besides the features themselves."""

    message_uid: str
    preventscam: bool = False


@dataclass
class Outcome:
    """The rewrite (None: nothing to change), and what was skipped ("feature: why")."""

    rewrite: Rewrite | None
    skipped: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(self, cfg: Config, keyring: KeyRing | None) -> None:
        self._inline = make_inliner(cfg.features.inliner)
        self._max_depth = cfg.features.max_html_depth
        self._max_bytes = cfg.features.max_html_bytes
        self._track_plain_text = cfg.features.track_plain_text
        self._base_url = cfg.tracker.base_url
        self._keyring = keyring

    def signer(self) -> Signer:
        if self._keyring is None:
            raise LookupError("no signing keys: tracking is not set up")
        return self._keyring.signer()

    def steps(self, features: FeatureSet) -> list[str]:
        """The content features to apply, in order (empty: the body is not needed)."""
        return [name for name in CONTENT_FEATURES if getattr(features, name)]

    def _link_for(self, uid: str) -> Callable[[str], str | None]:
        signer = self.signer()
        ours = self._base_url + "/"

        def link_for(url: str) -> str | None:
            if url.startswith(ours):
                return None  # already a tracking link (ours): never wrap twice
            return f"{self._base_url}/c/{signer.sign('c', uid, url)}"

        return link_for

    def rewrite(
        self,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        features: FeatureSet,
        options: Options,
    ) -> Outcome:
        """Apply the content features (a rewrite of None when none is on or nothing
        changed), with the parts' skips."""
        steps = self.steps(features)
        if not steps:
            return Outcome(None)
        skipped: list[str] = []
        html: list[Transform] = []
        plain: list[Transform] = []
        if "inlinecss" in steps:
            html.append(lambda s: self._inline_or_skip(s, skipped))
        if "trackclicks" in steps:
            link_for = self._link_for(options.message_uid)
            html.append(lambda s: track_links(s, link_for, preventscam=options.preventscam))
            if self._track_plain_text:
                plain.append(lambda s: track_text_links(s, link_for))
        if "trackopens" in steps:
            token = self.signer().sign("o", options.message_uid)
            pixel = f"{self._base_url}/o/{token}.gif"
            html.append(lambda s: add_pixel(s, pixel))

        transforms = {"text/html": _chain(html)}
        if plain:
            transforms["text/plain"] = _chain(plain)
        return Outcome(rewrite_text_parts(headers, body, transforms), skipped)

    def _inline_or_skip(self, html: str, skipped: list[str]) -> str:
        reason = not_inlinable(html, max_depth=self._max_depth, max_bytes=self._max_bytes)
        if reason is None:
            try:
                return self._inline(html)
            except Exception as e:  # noqa: BLE001 (a library's failure skips the feature)
                reason = f"the inliner failed: {type(e).__name__}: {str(e)[:200]}"
        skipped.append(f"inlinecss: {reason}")
        return html


def _chain(steps: list[Transform]) -> Transform:
    def run(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return run
