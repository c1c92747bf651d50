"""Config: defaults, validation, and errors that name the file, key and expectation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from smtpeter import config as configmod
from smtpeter.config import ConfigError


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(configmod.ENV_VAR, raising=False)
    monkeypatch.setattr(configmod, "DEFAULT_PATH", tmp_path / "absent.yaml")
    cfg = configmod.load()
    assert cfg.features.inliner == "css-inline"
    assert cfg.auth.failure_delay == 2.0
    assert cfg.source is None


def test_round_trip(tmp_path: Path) -> None:
    cfg = configmod.parse({"milter": {"workers": 3, "socket_mode": "0640"}}, "x")
    path = tmp_path / "c.yaml"
    path.write_text(configmod.to_yaml(cfg))
    again = configmod.load(path)
    assert again.milter.workers == 3 and again.milter.socket_mode == 0o640
    assert again.store == cfg.store


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "auth:\n  failure_delay: 12\n",
            "auth.failure_delay: expected a number from 0 to below 10",
        ),
        (
            "features:\n  inliner: fast\n",
            "features.inliner: expected one of 'css-inline', 'premailer'",
        ),
        ("milter:\n  socket_mode: rw\n", "milter.socket_mode: expected an octal file mode"),
        ("milter:\n  sockett: x\n", "milter.sockett: unknown setting"),
        ("store: 5\n", "store: expected a mapping"),
        ("auth:\n  cache_ttl: yes\n", "auth.cache_ttl: expected a number, got True"),
        (
            "milter:\n  socket: /tmp/m.sock\n",
            "milter.socket: expected unix:/path or inet:port@host",
        ),
        ("store:\n  sqlite_path: relative.db\n", "store.sqlite_path: expected an absolute path"),
        ("auth: [\n", "not valid YAML"),
        (
            "bounces:\n  feedback_address: fbl\n",
            "bounces.feedback_address: expected an address such as fbl@bounces.example.com",
        ),
        (
            "bounces:\n  feedback_address: '\"a b\"@example.com'\n",
            "bounces.feedback_address: expected an address",
        ),
    ],
)
def test_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "smtpeter.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        configmod.load(tmp_path / "nope.yaml")


def test_shipped_config_documents_exactly_the_defaults() -> None:
    shipped = Path(__file__).parents[2] / "packaging" / "smtpeter.yaml"
    cfg = configmod.load(shipped)
    assert cfg == configmod.parse(None, str(shipped))
    # ... and names every setting, so it is the one page a sysadmin needs.
    raw = yaml.safe_load(shipped.read_text())
    for section in dataclasses.fields(configmod.Config):
        if section.name == "source":
            continue
        keys = {f.name for f in dataclasses.fields(getattr(cfg, section.name))}
        assert set(raw[section.name]) == keys, section.name
