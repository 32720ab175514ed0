"""Call-center settings in the config loader: [[channels]], [privacy], [[alerts]], [alerts_output]."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from emostream.alerts.delivery import AlertOutput
from emostream.alerts.rules import AlertRule
from emostream.config import Config, config_from_dict, load_config
from emostream.engine import channels
from emostream.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

CALL_CENTER = """
[[channels]]
index = 0
role = "customer"
name = "Caller"
[[channels]]
index = 1
role = "agent"

[[alerts]]
name = "customer_angry"
emotions = ["angry"]
threshold = 0.6
min_duration_s = 5
clear_threshold = 0.4
roles = ["customer"]

[[alerts]]
name = "distress"
emotions = ["sad", "fearful"]
combine = "max"
threshold = 0.5
clear_after_s = 3.0

[alerts_output]
webhook = "http://127.0.0.1:9/alerts"
command = ["python3", "hook.py"]
retries = 1
"""


def parse(text: str) -> Config:
    return config_from_dict(tomllib.loads(text), "test.toml")


def test_call_center_config_parses_to_runtime_objects():
    cfg = parse(CALL_CENTER)
    rules = list(cfg.alerts)
    assert rules[0] == AlertRule(
        name="customer_angry",
        emotions=("angry",),
        threshold=0.6,
        min_duration_s=5.0,
        clear_threshold=0.4,
        roles=("customer",),
    )
    assert rules[1].combine == "max" and rules[1].emotions == ("sad", "fearful") and rules[1].roles == ()
    out = cfg.alerts_output
    assert out == AlertOutput(webhook="http://127.0.0.1:9/alerts", command=("python3", "hook.py"), retries=1)
    assert out.argv() == ["python3", "hook.py"]


def test_agent_channel_is_not_analysed_unless_allowed():
    cfg = parse(CALL_CENTER)
    plans = channel_plan(cfg, 2)
    assert [(p.index, p.role, p.name, p.analysed) for p in plans] == [
        (0, "customer", "Caller", True),
        (1, "agent", "agent (ch 1)", False),
    ]
    allowed = parse(CALL_CENTER + "\n[privacy]\nallow_agent_analysis = true\n")
    assert [p.analysed for p in channel_plan(allowed, 2)] == [True, True]


def test_default_channel_roles():
    assert [p.role for p in channel_plan(Config(), 1)] == ["speaker"]
    plans = channel_plan(Config(), 3, default_roles=("customer", "agent"))
    assert [(p.role, p.analysed) for p in plans] == [("customer", True), ("agent", False), ("speaker", True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[alerts]]\nname = 'a'\nemotions = ['angry']\ncolour = 'red'\n", "colour is not a known key"),
        ("[[alerts]]\nname = 'a'\nemotions = ['angry']\nthreshold = 0.5\nclear_threshold = 0.8\n", "clear_threshold"),
        ("[[alerts]]\nname = 'a'\nemotions = [1]\n", "emotions"),
        ("[[alerts]]\nname = 'a'\nemotions = ['angry']\ncombine = 'mean'\n", "combine"),
        ("[[alerts]]\nemotions = ['angry']\n", "name"),
        ("[[channels]]\nrole = 'customer'\n", "index is missing"),
        ("[[channels]]\nindex = 0\nrole = ''\n", "role"),
        ("[alerts_output]\nwebhook = 'ftp://x'\n", "webhook"),
        ("[alerts_output]\nqueue_size = 0\n", "queue_size"),
        ("[privacy]\nallow_agent_analysis = 'yes'\n", "allow_agent_analysis"),
    ],
)
def test_invalid_settings_name_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_channel_plan_rejects_missing_or_repeated_channels():
    cfg = parse("[[channels]]\nindex = 2\nrole = 'customer'\n")
    with pytest.raises(ConfigError, match="index 2 does not exist"):
        channel_plan(cfg, 2)
    twice = parse("[[channels]]\nindex = 0\n[[channels]]\nindex = 0\nrole = 'agent'\n")
    with pytest.raises(ConfigError, match="given twice"):
        channel_plan(twice, 2)


def test_shipped_config_keeps_call_center_defaults():
    cfg = load_config(REPO / "config.toml")
    assert cfg.channels == () and cfg.alerts == ()
    assert cfg.privacy == Config().privacy and cfg.alerts_output == Config().alerts_output


def test_batch_mode_ignores_channels_the_file_does_not_have():
    cfg = parse(CALL_CENTER)
    plans = channel_plan(cfg, 1, ("mixed",), strict=False)
    assert [(p.index, p.role, p.analysed) for p in plans] == [(0, "customer", True)]
    assert [p.role for p in channel_plan(Config(), 1, ("mixed",), strict=False)] == ["mixed"]


def channel_plan(cfg: Config, n: int, default_roles: tuple[str, ...] = (), *, strict: bool = True):
    return channels.channel_plan(cfg.channels, cfg.privacy, n, default_roles, strict=strict, where=cfg.source)
