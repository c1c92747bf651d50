"""The SMTPeter features, one module each; this module holds the flags that select them.

A feature is a pure function over one HTML part (or the envelope) and knows nothing
of pymilter: the relay collects, decides and splices.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

# The order features are applied in: inlining first so that tracking rewrites the
# final markup. unsubscribe adds List-Unsubscribe headers (RFC 8058) at the end.
NAMES: tuple[str, ...] = ("inlinecss", "trackclicks", "trackopens", "trackbounces", "unsubscribe")


@dataclass(frozen=True)
class FeatureSet:
    inlinecss: bool = False
    trackclicks: bool = False
    trackopens: bool = False
    trackbounces: bool = False
    unsubscribe: bool = False

    def enabled(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]

    def with_overrides(self, overrides: dict[str, bool]) -> FeatureSet:
        return replace(self, **overrides)

    def as_dict(self) -> dict[str, bool]:
        return {f.name: bool(getattr(self, f.name)) for f in fields(self)}
