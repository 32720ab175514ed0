"""The live terminal dashboard (rich): renders :class:`DashboardState` snapshots.

:func:`render` is pure: it turns one frozen snapshot into a rich renderable whose
layout is computed at render time from the width rich offers (``options.max_width``),
so it adapts to terminal resizes and degrades gracefully down to ~40 columns.
:class:`LiveDashboard` wraps :class:`rich.live.Live`; the engine thread calls
:meth:`LiveDashboard.update` with a new snapshot (a reference swap, no lock needed)
while rich's refresh thread renders the latest one about 8 times a second.
:func:`render_summary` renders the :class:`SessionSummary` shown on exit.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from emostream.engine.events import ChannelSummary, ChannelView, DashboardState, SessionSummary, TimelinePoint

EMOTION_COLOURS: dict[str, str] = {
    "neutral": "grey70",
    "calm": "cyan",
    "happy": "yellow",
    "sad": "blue",
    "angry": "red",
    "fearful": "magenta",
    "disgust": "green",
    "surprised": "bright_magenta",
}
_FALLBACK_COLOURS = ("bright_cyan", "bright_yellow", "bright_blue", "bright_green", "orange3", "purple", "gold3")
_BLOCKS = " ▏▎▍▌▋▊█"  # eighths of a cell, for smooth bars
_LEVEL_FLOOR_DB = -60.0
_ALERT_STYLE = "bold white on red"
_SIDE_BY_SIDE_WIDTH = 160  # columns from which two channels sit side by side


def emotion_colour(label: str) -> str:
    """A stable colour per emotion label (fixed for RAVDESS labels, hashed for others)."""
    known = EMOTION_COLOURS.get(label)
    if known is not None:
        return known
    return _FALLBACK_COLOURS[zlib.crc32(label.encode()) % len(_FALLBACK_COLOURS)]


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above; negative values clamp to 0."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _fmt_rtf(value: float | None) -> str:
    """The real-time factor as the processing time it stands for (not a playback speed)."""
    if value is None:
        return "RTF –"
    return f"RTF {value:.4f} (processing took {value * 100:.1f} % of the audio's duration)"


def _bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (0..1) with eighth-cell resolution."""
    if width <= 0:
        return ""
    fraction = min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else 0.0
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_BLOCKS[part] if part and full < width else "")
    return text.ljust(width)


def _join_wrapped(segments: Sequence[Text], width: int, sep: str = " · ") -> Text:
    """Segments joined by ``sep``, breaking the line between segments (not inside) when it would overflow."""
    out = Text(overflow="fold")
    line = 0
    for i, seg in enumerate(segments):
        if i:
            if line + len(sep) + seg.cell_len > width:
                out.append("\n")
                line = 0
            else:
                out.append(sep, style="dim")
                line += len(sep)
        out.append_text(seg)
        line += seg.cell_len
    return out


def _field(name: str, value: str, style: str = "") -> Text:
    return Text.assemble((f"{name} ", "dim"), (value, style))


def _header(state: DashboardState, width: int) -> Text:
    status_style = "bold green" if state.status == "listening" else "bold yellow"
    segments = [
        Text("emostream", style="bold"),
        _field("source", state.source),
        _field("input", f"{state.input_rate_hz} Hz"),
        _field("model", state.model_name),
        _field("elapsed", format_duration(state.elapsed_s)),
        Text(state.status, style=status_style),
    ]
    return _join_wrapped(segments, width)


def hold_reason(view: ChannelView) -> str | None:
    """Why the smoother still shows ``view.emotion`` although another label leads; None when it leads.

    The shown label changes only when the leader beats it by more than the hysteresis
    margin *and* it has been shown for the minimum dwell (see :mod:`emostream.engine.smoothing`).
    """
    if view.emotion is None or view.leader is None or view.leader == view.emotion or view.leader_score is None:
        return None
    held = view.confidence or 0.0
    lead = f"{view.leader} leads {view.leader_score:.0%}"
    if view.shown_for_s is not None and view.shown_for_s < view.min_dwell_s - 1e-9:
        return f"{lead}; held: dwell {view.shown_for_s:.1f}/{view.min_dwell_s:g} s"
    margin = view.leader_score - held
    if margin <= view.hysteresis + 1e-9:
        return f"{lead}; held: margin {margin:.0%} ≤ hysteresis {view.hysteresis:.0%}"
    return f"{lead}; changes at the next speech window"


def _in_pause(view: ChannelView) -> bool:
    """The latest window had no speech after some speech: the label on screen is the last reading, not a current one."""
    return not view.speech_active and view.silent_for_s is not None


def _is_held(view: ChannelView) -> bool:
    """The shown label is held by hysteresis or dwell while another label leads the smoothed scores."""
    return view.leader is not None and view.emotion is not None and view.leader != view.emotion


def _emotion_line(view: ChannelView, with_reason: bool = False) -> Text:
    """The reading: a leading label in capitals with its smoothed score; a held one, a pause or weak evidence said so.

    A label held while another leads is not shown with its (collapsed) score as if it were the
    reading; in a pause the last reading is shown dim, as the last one, with how long the pause lasts.
    """
    if view.emotion is None:
        return Text("listening… (no emotion yet)", style="dim italic")
    colour = emotion_colour(view.emotion)
    text = Text()
    if _in_pause(view):
        text.append(f"  pause {view.silent_for_s or 0.0:.1f} s", style="bold")
        text.append(f"  ·  last reading {view.emotion}", style=f"{colour} dim")
        if view.confidence is not None and not view.uncertain and not _is_held(view):
            text.append(f" {view.confidence:.0%}", style="dim")
        return text
    if view.uncertain:
        text.append(f"  {view.emotion.lower()}?  ", style=f"{colour} dim")
        text.append("  uncertain", style="bold yellow")
        text.append(" (weak evidence; no alerts)", style="dim")
    elif _is_held(view):
        text.append(f"  {view.emotion.lower()}  ", style=colour)
        text.append("  held", style="yellow")
    else:
        text.append(f"  {view.emotion.upper()}  ", style=f"bold reverse {colour}")
        if view.confidence is not None:
            text.append(f"  {view.confidence:.0%}", style="bold")
            text.append(" smoothed", style="dim")
    if view.arousal is not None:
        text.append("  ·  arousal ", style="dim")
        text.append(f"{view.arousal:.2f}", style="bold red" if view.arousal >= 0.8 else "bold")
    reason = hold_reason(view) if with_reason else None
    if reason is not None:
        text.append(f"  ·  {reason}", style="yellow")
    return text


def _reason_line(view: ChannelView) -> Text | None:
    reason = None if _in_pause(view) else hold_reason(view)
    return None if reason is None else Text(f"  {reason}", style="yellow")


def _score_bars(view: ChannelView, labels: Sequence[str], width: int) -> Table:
    label_width = max((len(lab) for lab in labels), default=7)
    bar_width = max(3, width - label_width - 8)  # marker, label, bar, "100%" and 3 gaps
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1, no_wrap=True)
    table.add_column(width=label_width, no_wrap=True)
    table.add_column(width=bar_width, no_wrap=True)
    table.add_column(width=4, justify="right", no_wrap=True)
    for label in labels:
        score = float(view.smoothed.get(label, 0.0))
        current = label == view.emotion
        colour = emotion_colour(label)
        style = f"bold {colour}" if current else colour
        table.add_row(
            Text("▶" if current else " ", style=style),
            Text(label, style=style if current else ""),
            Text(_bar(score, bar_width), style=style if current else f"{colour} dim"),
            Text(f"{score:.0%}", style="bold" if current else "dim"),
        )
    return table


def _timeline_cells(
    points: Sequence[TimelinePoint], span_s: float, cells: int, hop_s: float = 0.5
) -> list[str | bool | None]:
    """Emotion per cell (oldest first): a label, None for silence, False for no data yet.

    ``hop_s`` is the session's hop between readings (carried by the state, not guessed
    from the timeline). The newest point is at the right edge, one cell per hop; when the span holds more
    hops than there are cells, each cell covers one or more hops and shows their most
    frequent label (silence only if all its hops were silent).
    """
    if cells <= 0:
        return []
    if not points:
        return [False] * cells
    hop = hop_s
    newest = points[-1].t_end
    n_hops = max(1, round(span_s / hop))
    shown = min(cells, n_hops)
    buckets: list[list[str | None]] = [[] for _ in range(shown)]
    for p in points:
        age = round((newest - p.t_end) / hop)  # 0 = newest hop
        if 0 <= age < n_hops:
            buckets[shown - 1 - (age * shown) // n_hops].append(p.emotion)
    out: list[str | bool | None] = [False] * (cells - shown)
    for bucket in buckets:
        speech = [e for e in bucket if e is not None]
        if speech:
            out.append(Counter(speech).most_common(1)[0][0])
        else:
            out.append(None if bucket else False)
    return out


def _timeline(points: Sequence[TimelinePoint], span_s: float, width: int, hop_s: float) -> Text:
    prefix = f"last {span_s:.0f}s "
    cells = max(1, width - len(prefix))
    text = Text(no_wrap=True, overflow="crop")
    text.append(prefix, style="dim")
    runs: list[tuple[str, str, int]] = []  # (glyph, style, length): one span per run of equal cells
    for cell in _timeline_cells(points, span_s, cells, hop_s):
        glyph, style = (
            (" ", "") if cell is False else ("·", "dim") if cell is None else ("█", emotion_colour(str(cell)))
        )
        if runs and runs[-1][:2] == (glyph, style):
            runs[-1] = (glyph, style, runs[-1][2] + 1)
        else:
            runs.append((glyph, style, 1))
    for glyph, style, length in runs:
        text.append(glyph * length, style=style)
    return text


def _level_line(view: ChannelView, width: int) -> Text:
    """Level meter and speech dot, both over the latest analysis window's span (``level_span_s``)."""
    db = view.level_db if math.isfinite(view.level_db) else _LEVEL_FLOOR_DB
    span = f"last {view.level_span_s:.1f}s "
    label = f"{span}level {db:6.1f} dBFS " if db > _LEVEL_FLOOR_DB else f"{span}level  <{_LEVEL_FLOOR_DB:.0f} dBFS "
    vad = "● speech" if view.speech_active else "○ silence"
    meter_width = max(3, min(30, width - len(label) - len(vad) - 3))
    fraction = (max(_LEVEL_FLOOR_DB, min(0.0, db)) - _LEVEL_FLOOR_DB) / -_LEVEL_FLOOR_DB
    colour = "red" if db > -3 else "yellow" if db > -12 else "green"
    text = Text()
    text.append(label, style="dim")
    text.append("[")
    text.append(_bar(fraction, meter_width), style=colour)
    text.append("] ")
    text.append(vad, style="bold green" if view.speech_active else "dim")
    return text


class ChannelPanel:
    """One channel's panel; lays itself out for the width it is given at render time."""

    def __init__(self, view: ChannelView, labels: Sequence[str], timeline_seconds: float, hop_s: float = 0.5) -> None:
        self.view = view
        self.labels = tuple(labels)
        self.timeline_seconds = timeline_seconds
        self.hop_s = hop_s

    def _body(self, inner: int) -> list[RenderableType]:
        view = self.view
        rows: list[RenderableType] = []
        for alert in view.active_alerts:
            rows.append(Text(f"⚠ ALERT: {alert}", style=_ALERT_STYLE))
        if not view.analysed:
            rows.append(Text(f"not analysed (role {view.role}; see allow_agent_analysis)", style="dim italic"))
            rows.append(_level_line(view, inner))
            return rows
        rows.append(_emotion_line(view))
        reason = _reason_line(view)
        if reason is not None:
            rows.append(reason)
        rows.append(_score_bars(view, self.labels, inner))
        rows.append(_timeline(view.timeline, self.timeline_seconds, inner, self.hop_s))
        rows.append(_level_line(view, inner))
        return rows

    def rows(self) -> int:
        """Terminal rows the full panel takes."""
        if not self.view.analysed:
            return 2 + len(self.view.active_alerts) + 2
        reason = _reason_line(self.view) is not None
        return 2 + len(self.view.active_alerts) + 3 + reason + len(self.labels)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        view = self.view
        inner = max(10, options.max_width - 4)  # border + padding
        alert = bool(view.active_alerts)
        title = f"channel {view.channel} · {view.role}"
        if view.name:
            title = f"{view.name} · {title}"
        if alert:
            title = f"⚠ ALERT · {title}"
        yield Panel(
            Group(*self._body(inner)),
            title=Text(title, style="bold red" if alert else "bold"),
            title_align="left",
            border_style="red" if alert else "blue",
            width=options.max_width,
        )


def _reading_delay(state: DashboardState) -> list[Text]:
    """Per analysed channel: how long the shown label has been shown, and the median delay the smoother adds.

    That delay runs from the windows' evidence turning to a label to the label being shown; a
    change in the voice takes longer to show, as each window also spans the last 2 s of audio
    (docs/usage.md, "The dashboard").
    """
    out = []
    several = len(state.channels) > 1
    for view in state.channels:
        if not view.analysed or view.shown_for_s is None:
            continue
        delay = "–" if view.median_delay_s is None else f"{view.median_delay_s:.1f} s"
        prefix = f"ch{view.channel} " if several else ""
        out.append(
            Text.assemble(
                (f"{prefix}label shown ", "dim"),
                f"{view.shown_for_s:.1f} s",
                (" · smoother delay p50 ", "dim"),
                delay,
            )
        )
    return out


def _footer(state: DashboardState, width: int) -> Text:
    lost = state.dropped_samples > 0 or state.overflow_count > 0
    segments = [
        Text.assemble(("latency p50 ", "dim"), _fmt_ms(state.latency_p50_ms)),
        Text.assemble(("p99 ", "dim"), _fmt_ms(state.latency_p99_ms)),
        *_reading_delay(state),
        Text(_fmt_rtf(state.realtime_factor)),
        Text(
            f"dropped {state.dropped_samples} samples ({state.overflow_count} overflows)",
            style=_ALERT_STYLE if lost else "dim",
        ),
    ]
    text = _join_wrapped(segments, width)
    for message in state.messages:
        text.append("\n")
        text.append(message, style="yellow")
    return text


class DashboardView:
    """The whole dashboard for one snapshot; see :func:`render`."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        state = self.state
        width = options.max_width
        panels = [ChannelPanel(view, state.labels, state.timeline_seconds, state.hop_s) for view in state.channels]
        height = options.height or options.max_height
        stacked = len(panels) > 1 and width < _SIDE_BY_SIDE_WIDTH
        needed = (
            4
            + len(state.messages)
            + (sum(p.rows() for p in panels) if stacked else max((p.rows() for p in panels), default=1))
        )
        if panels and height and needed > height:
            yield from _compact(state, width, height)
            return
        yield _header(state, width)
        if not panels:
            yield Text("no channels yet", style="dim italic")
        elif len(panels) > 1 and width >= _SIDE_BY_SIDE_WIDTH:
            grid = Table.grid(expand=True, padding=(0, 1))
            for _ in panels[:2]:
                grid.add_column(ratio=1)
            for start in range(0, len(panels), 2):
                row = panels[start : start + 2]
                grid.add_row(*row, *([Text("")] * (2 - len(row))))
            yield grid
        else:
            yield from panels
        yield _footer(state, width)


def _one_line(text: Text) -> Text:
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _compact(state: DashboardState, width: int, height: int) -> RenderResult:
    """A short terminal: per channel its label (and why it is held), arousal, level and speech state.

    Header, reason and footer are cropped to one line each; the label and level lines wrap
    rather than lose the arousal or the speech state.
    """
    yield _one_line(_header(state, 10**6))
    for view in state.channels:
        title = view.name or f"channel {view.channel} · {view.role}"
        alerts = "".join(f" ⚠ ALERT: {a}" for a in view.active_alerts)
        yield _one_line(Text(title + alerts, style=_ALERT_STYLE if alerts else "bold"))
        if view.analysed:
            yield _emotion_line(view)
            reason = _reason_line(view)
            if reason is not None:
                yield _one_line(reason)
        yield _level_line(view, width)
    yield _one_line(_footer(state, 10**6))


def render(state: DashboardState) -> RenderableType:
    """The dashboard for one snapshot. Pure: same state in, same drawing out (for a given width).

    Two or more channels sit side by side when the console is at least 160 columns
    wide, stacked otherwise. When the full panels do not fit the console's height (a
    12-row terminal), a compact layout keeps each channel's label, arousal, level and
    speech state.
    """
    return DashboardView(state)


def _channel_summary_table(channel: ChannelSummary) -> Table:
    title = f"channel {channel.channel} · {channel.role}"
    table = Table(title=title, title_justify="left", expand=False, show_edge=False, pad_edge=False)
    table.add_column("emotion")
    table.add_column("time", justify="right")
    table.add_column("share", justify="right")
    shares = channel.shares()
    for label, seconds in sorted(channel.emotion_seconds.items(), key=lambda kv: -kv[1]):
        table.add_row(
            Text(label, style=emotion_colour(label)), format_duration_precise(seconds), f"{shares.get(label, 0.0):.0%}"
        )
    if not channel.analysed:
        table.caption = "not analysed"
    elif not channel.emotion_seconds:
        table.caption = "no emotion shown"
    return table


def format_duration_precise(seconds: float) -> str:
    """Seconds with one decimal below a minute, else ``m:ss``."""
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(seconds)


def render_summary(summary: SessionSummary) -> RenderableType:
    """The session summary shown on exit: totals, time and share per emotion per channel, health."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    lost = summary.dropped_samples > 0 or summary.overflow_count > 0
    rows: list[tuple[str, Text | str]] = [
        ("source", summary.source),
        ("duration", format_duration_precise(summary.duration_s)),
        ("hops", str(summary.hops)),
        ("ended", summary.exit_reason),
        (
            "dropped",
            Text(
                f"{summary.dropped_samples} samples ({summary.overflow_count} overflows)",
                style=_ALERT_STYLE if lost else "",
            ),
        ),
        ("latency", f"p50 {_fmt_ms(summary.latency_p50_ms)} · p99 {_fmt_ms(summary.latency_p99_ms)}"),
        ("speed", _fmt_rtf(summary.realtime_factor)),
    ]
    if summary.alert_delivery is not None:
        d = summary.alert_delivery
        undelivered = d.get("failed", 0) + d.get("dropped", 0) + d.get("pending", 0)
        rows.append(
            (
                "alert delivery",
                Text(
                    f"{d.get('delivered', 0)} delivered · {d.get('failed', 0)} failed · "
                    f"{d.get('dropped', 0)} dropped (queue full) · {d.get('pending', 0)} still pending",
                    style="bold red" if undelivered else "",
                ),
            )
        )
    for channel in summary.channels:
        speech = format_duration_precise(channel.speech_seconds)
        alerts = Text(f"{channel.alerts} alerts", style="bold red" if channel.alerts else "dim")
        rows.append((f"channel {channel.channel}", Text.assemble(f"speech {speech} · ", alerts)))
    for name, value in rows:
        facts.add_row(name, value)
    parts: list[RenderableType] = [facts]
    parts.extend(_channel_summary_table(c) for c in summary.channels)
    return Panel(Group(*parts), title="session summary", title_align="left", border_style="blue")


class LiveDashboard:
    """Context manager around :class:`rich.live.Live` showing the latest snapshot.

    ``update(state)`` only stores the snapshot (an atomic reference swap), so the
    engine thread can call it at any rate; rich's refresh thread renders the latest
    snapshot ``refresh_per_second`` times a second.
    """

    def __init__(
        self,
        console: Console | None = None,
        refresh_per_second: float = 8.0,
        redirect_stdout: bool = True,
        redirect_stderr: bool = False,
    ) -> None:
        self.console = console if console is not None else Console()
        self._state: DashboardState | None = None
        self._live = Live(
            console=self.console,
            screen=False,
            transient=False,
            auto_refresh=True,
            refresh_per_second=refresh_per_second,
            redirect_stdout=redirect_stdout,
            redirect_stderr=redirect_stderr,
            get_renderable=self._renderable,
        )

    def _renderable(self) -> RenderableType:
        state = self._state
        return Text("emostream · starting…", style="dim") if state is None else render(state)

    @property
    def state(self) -> DashboardState | None:
        """The latest snapshot given to :meth:`update`, None before the first."""
        return self._state

    def update(self, state: DashboardState) -> None:
        """Show ``state`` from the next refresh on (thread-safe: a reference swap)."""
        self._state = state

    def start(self) -> None:
        """Start the live display."""
        self._live.start(refresh=True)

    def stop(self) -> None:
        """Draw the last snapshot one final time and stop the live display."""
        if self._live.is_started:
            self._live.refresh()
            self._live.stop()

    def print_summary(self, summary: SessionSummary) -> None:
        """Print the session summary below the (stopped) dashboard."""
        self.console.print(render_summary(summary))

    def __enter__(self) -> LiveDashboard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
