"""A py-spy profile (``py-spy record -f raw``) as a short text table: per process, the top functions.

``python -m benchmarks.profile_summary PROFILE.txt [--top 25] [--match TEXT]`` prints, for each
process of the profile (``--subprocesses`` records one per process: the server, its analysis
workers, the load client), its share of the samples, then the functions with the largest share
of its samples by self time and by inclusive time (line numbers dropped). ``--match`` keeps the
processes whose command line contains the text. The tables in ``docs/profiles/`` were made with it.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def summarise(path: Path, *, top: int = 25, match: str = "") -> str:
    """The text tables of the profile at ``path`` (see the module docstring)."""
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        process = re.sub(r"^process \d+:", "", processes[-1])[:100] if processes else "(one process)"
        if match and match not in process:
            continue
        calls = [_LINE.sub(")", f) for f in frames if not f.startswith("process ")]
        n = int(count)
        totals[process] += n
        if calls:
            own[process][calls[-1]] += n
        for name in set(calls):
            inclusive[process][name] += n
    everything = sum(totals.values()) or 1
    out = []
    for process, n in totals.most_common():
        out.append(f"== {process}: {n} samples ({100 * n / everything:.1f} % of the profile)")
        for title, table in (("self", own[process]), ("inclusive", inclusive[process])):
            out.append(f"   {title}:")
            out += [f"   {100 * v / n:6.1f} %  {name}" for name, v in table.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary", description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="a py-spy raw profile (py-spy record -f raw -o FILE)")
    parser.add_argument("--top", type=int, default=25, help="functions per table (default 25)")
    parser.add_argument("--match", default="", help="only processes whose command line contains this")
    args = parser.parse_args(argv)
    print(summarise(args.profile, top=args.top, match=args.match))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
