"""pyproject.toml lists packages by hand (postfix/ is mapped into the package): a
subpackage missing from the list would be left out of every real install."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_subpackage_is_listed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT / "milter").parts)
        for init in (ROOT / "milter" / "smtpeter").rglob("__init__.py")
    }
    assert found | {"smtpeter.postfix"} == listed
