"""The feature pipeline: which transforms run over a message's HTML parts, in order.

Runs on the relay's feature thread, never on libmilter's threads (see REFERENCE.md:
lxml-based code called from libmilter's worker threads segfaults under load).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from smtpeter.config import FeaturesConfig
from smtpeter.features import FeatureSet
from smtpeter.features.inlinecss import make_inliner
from smtpeter.relay.mime import Rewrite, rewrite_html_parts

Transform = Callable[[str], str]


class Pipeline:
    def __init__(self, cfg: FeaturesConfig) -> None:
        self._inline = make_inliner(cfg.inliner)

    def html_steps(self, features: FeatureSet) -> list[tuple[str, Transform]]:
        """The (feature name, transform) pairs to apply to each HTML part, in order."""
        steps: list[tuple[str, Transform]] = []
        if features.inlinecss:
            steps.append(("inlinecss", self._inline))
        return steps

    def rewrite(
        self, headers: Sequence[tuple[str, str]], body: bytes, features: FeatureSet
    ) -> Rewrite | None:
        """Apply the features' HTML transforms; None when no HTML feature is on."""
        steps = self.html_steps(features)
        if not steps:
            return None

        def transform(html: str) -> str:
            for _name, step in steps:
                html = step(html)
            return html

        return rewrite_html_parts(headers, body, transform)
