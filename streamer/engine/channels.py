"""Which input channel carries whom: ``[[channels]]`` and ``[privacy]``, and the per-channel plan.

A channel's *role* (``customer``, ``agent``, ``speaker``, ``mixed`` or any name) selects
alert rules and decides whether it is analysed: emotion recognition of employees at the
workplace is prohibited in the EU (AI Act Art. 5(1)(f)), so a channel with role
``agent`` is only metered (VAD and level) unless ``[privacy] allow_agent_analysis``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emostream.errors import ConfigError, InvalidSettingError

AGENT_ROLE = "agent"
DEFAULT_ROLE = "speaker"


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """[[channels]]: ``index`` 0-based channel of the input; ``role``; ``name`` shown on the dashboard."""

    index: int | None = None
    role: str = "customer"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.index is None:
            raise InvalidSettingError("index", "is missing; give the 0-based channel index, e.g. index = 0")
        if not 0 <= self.index < 32:
            raise InvalidSettingError("index", f"is {self.index}; expected 0 to 31")
        if not self.role:
            raise InvalidSettingError("role", "is empty; expected 'customer', 'agent' or a name")


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """[privacy]: ``allow_agent_analysis`` analyses ``agent`` channels too (see the module docstring)."""

    allow_agent_analysis: bool = False


@dataclass(frozen=True)
class ChannelPlan:
    """How one input channel is handled: its role, name (given or ``role (ch i)``), whether it is analysed."""

    index: int
    role: str
    name: str
    analysed: bool
    given_name: str | None = None  # the [[channels]] name, if one was given


def channel_plan(
    channels: Sequence[ChannelConfig],
    privacy: PrivacyConfig,
    n_channels: int,
    default_roles: Sequence[str] = (),
    *,
    strict: bool = True,
    where: str = "config",
) -> tuple[ChannelPlan, ...]:
    """One plan per input channel, from ``channels`` (else ``default_roles[i]``, else ``speaker``).

    Raises ConfigError for an index given twice, or (``strict``, for live input) one the
    input does not have; batch mode passes ``strict=False`` to ignore those.
    """
    by_index: dict[int, ChannelConfig] = {}
    for setting in channels:
        index = int(setting.index or 0)
        if index in by_index:
            raise ConfigError(f"{where}: [[channels]] index {index} is given twice; give each channel once")
        if index >= n_channels and not strict:
            continue
        if index >= n_channels:
            raise ConfigError(
                f"{where}: [[channels]] index {index} does not exist; the input has {n_channels} channel(s) "
                f"(indices 0 to {n_channels - 1})"
            )
        by_index[index] = setting
    plans = []
    for i in range(n_channels):
        ch = by_index.get(i)
        role = ch.role if ch is not None else (default_roles[i] if i < len(default_roles) else DEFAULT_ROLE)
        name = ch.name if ch is not None and ch.name else f"{role} (ch {i})"
        analysed = role != AGENT_ROLE or privacy.allow_agent_analysis
        given = ch.name if ch is not None and ch.name else None
        plans.append(ChannelPlan(index=i, role=role, name=name, analysed=analysed, given_name=given))
    return tuple(plans)
