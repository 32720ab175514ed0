"""Alert rules as a user meets them: do they fire on an angry stretch and stay silent on a calm one?

    python -m benchmarks.alert_eval --data DIR [--data DIR ...] [--speakers 01,02|all] [--model NAME|PATH]
        [--config RULES.toml] [--phone] [--max-speakers 8] [--calm-s 30] [--angry-s 30] [--pause-s 0.3]
        [--seed 0] [--out report.json]

For each speaker it builds one call: a calm stretch (``--calm-s`` seconds of that speaker's
neutral and calm clips, their leading and trailing silence trimmed, joined with ``--pause-s``
pauses), then an angry stretch (``--angry-s`` seconds of the same speaker's angry clips). With
``--phone`` the call is a stereo 8 kHz G.711 mu-law WAV: channel 0 the customer (that speaker),
channel 1 an agent (another speaker's neutral speech, metered, not analysed); without it a mono
16 kHz WAV whose channel is the customer. The call file goes through the code of ``emostream
calls`` (:class:`~emostream.apps.calls.analysis.CallAnalyzer`: the session of ``emostream --file``
with the config's alert rules), and for every rule it reports:

* ``angry_fired``: share of angry stretches where the rule fired (on the customer);
* ``calm_fired``: share of calm stretches where it fired (a false alarm);
* ``delay_median_s`` / ``delay_p90_s``: from the start of the angry stretch to the firing, over
  the angry stretches where it fired.

and, whatever the rules, how long the shown label took to turn from another label to a confident
"angry" after the anger began (``label_delay_median_s``, ``label_delay_p90_s``: the delay a user
watching the dashboard experiences; calls whose calm stretch already ended on "angry" left out).

The rules are the ``[[alerts]]`` of ``--config`` (its other settings apply too), else the
README's rule (:data:`README_RULE`) and a grid of angry, angry-or-disgust and arousal rules
(:func:`default_rules`). ``--data`` is a corpus folder in
RAVDESS, nEMO or ASED layout (:mod:`benchmarks.corpus`); ``--speakers`` picks speakers by id
(``corpus:id`` when several corpora share ids), default up to ``--max-speakers`` per corpus
that have both calm and angry clips. ``--out`` writes the figures as JSON: ``protocol``
(``alerts`` or ``phone_alerts``), ``rules`` (per rule, overall and per corpus), ``calls`` (per
speaker outcomes) and ``mean``: the first rule's figures (the README's rule by default) with the
share of customer speech hops read uncertain and the share of the angry stretches' speech hops
that showed angry. The command the README's rule was chosen with is in docs/alerts.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from benchmarks.corpus import FloatArray, load_clips, read_clip
from emostream.alerts.rules import AlertRule
from emostream.apps.calls.analysis import CallAnalyzer, CallJob
from emostream.apps.options import parse_fold, parse_labels
from emostream.config import Config, load_config
from emostream.engine.channels import ChannelConfig
from emostream.errors import EmoStreamError
from emostream.train.corpora import Clip

RATE_HZ = 16000
PHONE_RATE_HZ = 8000
CALM = ("neutral", "calm")
ANGRY = ("angry",)
TRIM_BELOW_PEAK_DB = 35.0
TRIM_MARGIN_S = 0.1


README_RULE = AlertRule(
    name="customer_angry",
    emotions=("angry",),
    threshold=0.4,
    min_duration_s=2.0,
    clear_threshold=0.25,
    roles=("customer",),
)
"""The README's example rule (and config.toml's commented one): first, so the report's ``mean`` is its figures."""


def default_rules() -> tuple[AlertRule, ...]:
    """The README's rule, then a grid of angry, angry + disgust (sum) and arousal rules."""
    rules: list[AlertRule] = [README_RULE]
    for threshold in (0.4, 0.5, 0.6, 0.7):
        for duration in (2.0, 3.0, 4.0, 5.0):
            rules.append(_rule(f"angry>={threshold}/{duration:g}s", ("angry",), threshold, duration))
    for threshold in (0.5, 0.6, 0.7):
        for duration in (3.0, 5.0):
            rules.append(_rule(f"angry+disgust>={threshold}/{duration:g}s", ("angry", "disgust"), threshold, duration))
    for threshold in (0.7, 0.8):
        for duration in (3.0, 5.0):
            rules.append(
                AlertRule(
                    name=f"arousal>={threshold}/{duration:g}s",
                    on="arousal",
                    threshold=threshold,
                    min_duration_s=duration,
                    roles=("customer",),
                )
            )
    return tuple(rules)


def _rule(name: str, emotions: tuple[str, ...], threshold: float, duration: float) -> AlertRule:
    return AlertRule(name=name, emotions=emotions, threshold=threshold, min_duration_s=duration, roles=("customer",))


def trim(audio: FloatArray, rate_hz: int = RATE_HZ) -> FloatArray:
    """``audio`` without its leading and trailing silence (20 ms frames 35 dB below the clip's loudest; 0.1 s kept)."""
    frame = rate_hz // 50
    n = audio.size // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)) + 1e-12
    level = 20.0 * np.log10(rms)
    loud = np.flatnonzero(level >= level.max() - TRIM_BELOW_PEAK_DB)
    margin = round(TRIM_MARGIN_S * rate_hz)
    start = max(0, loud[0] * frame - margin)
    end = min(audio.size, (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def stretch(clips: Sequence[Clip], seconds: float, pause_s: float, rng: random.Random) -> FloatArray:
    """``seconds`` of the clips (shuffled, repeated as needed, silence trimmed) joined with ``pause_s`` pauses."""
    if not clips:
        raise ValueError("no clips for a stretch")
    pause = np.zeros(round(pause_s * RATE_HZ), dtype=np.float32)
    parts: list[FloatArray] = []
    total = 0
    need = round(seconds * RATE_HZ)
    order: list[Clip] = []
    while total < need:
        if not order:
            order = list(clips)
            rng.shuffle(order)
        piece = trim(read_clip(order.pop().path, RATE_HZ))
        parts += [piece, pause]
        total += piece.size + pause.size
    return np.concatenate(parts)[:need]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Call:
    """One built call: the customer's audio (16 kHz), where its angry stretch starts, and the agent's (or None)."""

    key: str
    customer: FloatArray
    angry_start_s: float
    agent: FloatArray | None


def build_call(
    key: str,
    mine: Sequence[Clip],
    agent_clips: Sequence[Clip] | None,
    *,
    calm_s: float,
    angry_s: float,
    pause_s: float,
    rng: random.Random,
    first: Sequence[str] = CALM,
) -> Call:
    """A calm stretch (or one of the ``first`` emotions) then an angry stretch of one speaker; with
    ``agent_clips`` an agent's neutral speech too."""
    calm = stretch([c for c in mine if c.emotion in first], calm_s, pause_s, rng)
    angry = stretch([c for c in mine if c.emotion in ANGRY], angry_s, pause_s, rng)
    customer = np.concatenate([calm, angry])
    agent = None
    if agent_clips is not None:
        # the agent speaks in turns: 2 s pauses between its utterances, as long as the customer's audio
        agent = stretch(agent_clips, customer.size / RATE_HZ, 2.0, rng)
    return Call(key=key, customer=customer, angry_start_s=calm.size / RATE_HZ, agent=agent)


def write_call(call: Call, folder: Path, phone: bool) -> Path:
    """The call as a file ``emostream calls`` reads: mono 16 kHz PCM WAV, or stereo 8 kHz mu-law WAV."""
    path = folder / f"{call.key.replace(':', '_')}.wav"
    if not phone:
        sf.write(str(path), call.customer, RATE_HZ, subtype="PCM_16")
        return path
    agent = call.agent if call.agent is not None else np.zeros_like(call.customer)
    stereo = np.stack([call.customer, agent[: call.customer.size]], axis=1)
    narrow = soxr.resample(stereo, RATE_HZ, PHONE_RATE_HZ).astype(np.float32)
    sf.write(str(path), np.clip(narrow, -1.0, 1.0), PHONE_RATE_HZ, format="WAV", subtype="ULAW")
    return path


def outcomes(alerts: Sequence[dict[str, Any]], rules: Sequence[AlertRule], angry_start_s: float) -> dict[str, Any]:
    """Per rule: whether it fired on the calm stretch, on the angry one, and the delay of the latter (s)."""
    result: dict[str, Any] = {}
    for rule in rules:
        fired = [a["t_end"] for a in alerts if a["rule"] == rule.name and a["state"] == "fired"]
        calm = [t for t in fired if t < angry_start_s]
        angry = [t for t in fired if t >= angry_start_s]
        result[rule.name] = {
            "calm_fired": bool(calm),
            "angry_fired": bool(angry),
            "delay_s": round(angry[0] - angry_start_s, 2) if angry else None,
        }
    return result


def figures(per_call: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One rule's figures over calls: fired shares, delay median and 90th percentile (None if it never fired)."""
    n = len(per_call)
    delays = sorted(o["delay_s"] for o in per_call if o["delay_s"] is not None)
    return {
        "calls": n,
        "angry_fired": round(sum(o["angry_fired"] for o in per_call) / n, 3) if n else None,
        "calm_fired": round(sum(o["calm_fired"] for o in per_call) / n, 3) if n else None,
        "delay_median_s": round(statistics.median(delays), 2) if delays else None,
        "delay_p90_s": round(float(np.percentile(delays, 90)), 2) if delays else None,
    }


def pick_speakers(
    clips: Sequence[Clip], wanted: str, max_speakers: int, rng: random.Random, first: Sequence[str] = CALM
) -> list[tuple[str, list[Clip]]]:
    """(``corpus:speaker``, clips) of the chosen speakers that have clips of the ``first`` emotions and angry ones."""
    by: dict[str, list[Clip]] = {}
    for clip in clips:
        by.setdefault(f"{clip.corpus}:{clip.speaker}", []).append(clip)
    usable = {k: v for k, v in by.items() if any(c.emotion in first for c in v) and any(c.emotion in ANGRY for c in v)}
    if wanted != "all" and wanted:
        names = [w.strip() for w in wanted.split(",") if w.strip()]
        chosen = [k for k in usable if k in names or k.split(":", 1)[1] in names]
        return [(k, usable[k]) for k in sorted(chosen)]
    keys = sorted(usable)
    per_corpus: dict[str, list[str]] = {}
    for k in keys:
        per_corpus.setdefault(k.split(":", 1)[0], []).append(k)
    chosen = []
    for names in per_corpus.values():
        chosen += sorted(rng.sample(names, min(max_speakers, len(names))))
    return [(k, usable[k]) for k in chosen]


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Build, analyse and score every call; the report dict."""
    cfg = load_config(args.config) if args.config else Config()
    if args.labels is not None:
        cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, show=args.labels))
    if args.fold is not None:
        cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, fold=args.fold))
    shown = cfg.labels.show
    # the default grid without the rules on labels not shown ([labels]: e.g. angry + disgust with four)
    rules = cfg.alerts or tuple(r for r in default_rules() if isinstance(shown, str) or set(r.emotions) <= set(shown))
    channels = (ChannelConfig(index=0, role="customer"),)
    if args.phone:
        channels += (ChannelConfig(index=1, role="agent"),)
    model = dataclasses.replace(cfg.model, name=args.model) if args.model else cfg.model
    cfg = dataclasses.replace(cfg, alerts=tuple(rules), channels=channels, model=model)
    analyzer = CallAnalyzer(cfg)
    rng = random.Random(args.seed)
    clips: list[Clip] = []
    for folder in args.data:
        clips += load_clips(folder)
    speakers = pick_speakers(clips, args.speakers, args.max_speakers, rng, args.first)
    if not speakers:
        raise SystemExit(f"alert_eval: no speaker with calm and angry clips matches --speakers {args.speakers}")
    neutral_by = {k: [c for c in v if c.emotion == "neutral"] for k, v in speakers}
    calls: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="alert_eval_") as tmp:
        for i, (key, mine) in enumerate(speakers):
            agent_key = next((k for k, _ in speakers[i + 1 :] + speakers[:i] if neutral_by[k] and k != key), None)
            agent = neutral_by[agent_key] if args.phone and agent_key else None
            lengths = {"calm_s": args.calm_s, "angry_s": args.angry_s, "pause_s": args.pause_s}
            call = build_call(key, mine, agent, **lengths, rng=rng, first=args.first)
            path = write_call(call, Path(tmp), args.phone)
            summary, runs = analyzer.analyze(CallJob(path=path, key=key))
            customer = summary["channels"][0]
            per_rule = outcomes(customer["alerts"], rules, call.angry_start_s)
            speech = [h for h in runs[0].hops if h.is_speech and h.smoothed is not None]
            uncertain = sum(h.uncertain for h in speech) / len(speech) if speech else None
            angry_shown = [h for h in speech if h.t_end >= call.angry_start_s]
            before = [h for h in speech if h.t_end < call.angry_start_s]
            was_angry = bool(before) and before[-1].emotion == "angry" and not before[-1].uncertain
            first_angry = next((h.t_end for h in angry_shown if h.emotion == "angry" and not h.uncertain), None)
            calls.append(
                {
                    "speaker": key,
                    "angry_start_s": round(call.angry_start_s, 2),
                    "uncertain_share": None if uncertain is None else round(uncertain, 3),
                    "angry_shown_share": round(sum(h.emotion == "angry" for h in angry_shown) / len(angry_shown), 3)
                    if angry_shown
                    else None,
                    # None also when the calm stretch already ended on a confident "angry" (no change to see)
                    "label_delay_s": None
                    if first_angry is None or was_angry
                    else round(first_angry - call.angry_start_s, 2),
                    "calm_ended_angry": was_angry,
                    "rules": per_rule,
                }
            )
            hits = sum(o["angry_fired"] for o in per_rule.values())
            print(
                f"  {key:14s} {hits:2d} of {len(rules)} rules fired on the angry stretch; "
                f"uncertain {calls[-1]['uncertain_share']} of speech hops, "
                f"angry shown on {calls[-1]['angry_shown_share']} of the angry stretch's",
                file=sys.stderr,
            )
    report_rules = {}
    corpora = sorted({c["speaker"].split(":", 1)[0] for c in calls})
    for rule in rules:
        per_call = [c["rules"][rule.name] for c in calls]
        report_rules[rule.name] = {
            **figures(per_call),
            "per_corpus": {
                corpus: figures([c["rules"][rule.name] for c in calls if c["speaker"].startswith(corpus + ":")])
                for corpus in corpora
            },
            "rule": {
                "emotions": list(rule.emotions),
                "on": rule.on,
                "combine": rule.combine,
                "threshold": rule.threshold,
                "min_duration_s": rule.min_duration_s,
            },
        }
    first = report_rules[rules[0].name]
    return {
        "protocol": "phone_alerts" if args.phone else "alerts",
        "model": analyzer.plan.model_name,
        "labels": list(analyzer.plan.labels),
        "data": [str(d) for d in args.data],
        "speakers": [k for k, _ in speakers],
        "first_emotions": list(args.first),
        "labels_fold": analyzer.plan.grouping.folded,
        "calm_s": args.calm_s,
        "angry_s": args.angry_s,
        "pause_s": args.pause_s,
        "seed": args.seed,
        "mean": {
            "rule": rules[0].name,
            **{k: v for k, v in first.items() if k not in ("rule", "per_corpus")},
            "uncertain_share": _mean(c["uncertain_share"] for c in calls),
            "angry_shown_share": _mean(c["angry_shown_share"] for c in calls),
            "label_delay_median_s": _median(c["label_delay_s"] for c in calls),
            "label_delay_p90_s": _percentile(c["label_delay_s"] for c in calls),
            "label_shown_share": round(sum(c["label_delay_s"] is not None for c in calls) / len(calls), 3),
        },
        "rules": report_rules,
        "calls": calls,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 3) if known else None


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def _percentile(values: Iterable[float | None], q: float = 90.0) -> float | None:
    known = [v for v in values if v is not None]
    return round(float(np.percentile(known, q)), 2) if known else None


def print_table(report: dict[str, Any]) -> None:
    """One line per rule."""
    print(
        f"{report['protocol']}: model {report['model']}, {len(report['speakers'])} speakers "
        f"({report['calm_s']:g} s calm, then {report['angry_s']:g} s angry)"
    )
    mean = report["mean"]
    print(
        f"customer speech hops read uncertain (alerts never fire on them): {mean['uncertain_share']}; "
        f"angry shown on {mean['angry_shown_share']} of the angry stretches' speech hops; the shown label "
        f"turned from another label to a confident angry in {mean['label_shown_share']} of the calls, "
        f"{mean['label_delay_median_s']} s (median; p90 {mean['label_delay_p90_s']} s) after the anger began"
    )
    corpora = list(next(iter(report["rules"].values()))["per_corpus"])
    head = "".join(f" {c[:10]:>13s}" for c in corpora)
    print(f"{'rule':26s} {'angry fired':>11s} {'calm fired':>10s} {'delay p50':>9s} {'p90':>7s}{head}")
    for name, f in report["rules"].items():
        p50 = "-" if f["delay_median_s"] is None else f"{f['delay_median_s']:.1f} s"
        p90 = "-" if f["delay_p90_s"] is None else f"{f['delay_p90_s']:.1f} s"
        parts = "".join(f" {p['angry_fired']:6.0%}/{p['calm_fired']:<5.0%}" for p in f["per_corpus"].values())
        print(f"{name:26s} {f['angry_fired']:11.0%} {f['calm_fired']:10.0%} {p50:>9s} {p90:>7s}{parts}")
    print("(per corpus: angry fired / calm fired)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alert_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", type=Path, required=True, help="corpus folder (repeatable)")
    parser.add_argument("--speakers", default="all", help="comma-separated speaker ids (or corpus:id); default all")
    parser.add_argument("--max-speakers", type=int, default=8, help="speakers per corpus when --speakers all")
    parser.add_argument("--model", default=None, help="model name or path (default: the config's)")
    parser.add_argument("--config", default=None, help="settings file; its [[alerts]] are the rules evaluated")
    parser.add_argument(
        "--labels",
        type=parse_labels,
        metavar="all|L1,L2,..",
        help="[labels] show for the run (e.g. neutral,happy,sad,angry); default: the config's",
    )
    parser.add_argument(
        "--fold", type=parse_fold, metavar="L=S,..", help="[labels] fold for the run (e.g. calm=neutral,fearful=sad)"
    )
    parser.add_argument("--phone", action="store_true", help="stereo 8 kHz G.711 mu-law calls with an agent")
    parser.add_argument(
        "--first",
        type=lambda text: tuple(e.strip() for e in text.split(",") if e.strip()),
        default=CALM,
        metavar="E1,E2",
        help="emotions of the first stretch (default neutral,calm): e.g. fearful to count the alerts fired on "
        "fearful speech in the 'calm fired' column",
    )
    parser.add_argument("--calm-s", type=float, default=30.0)
    parser.add_argument("--angry-s", type=float, default=30.0)
    parser.add_argument("--pause-s", type=float, default=0.3, help="pause between clips, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args)
    except EmoStreamError as exc:
        print(f"alert_eval: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
