"""Check that the README still matches the installed program. Run by .ci/run in a fresh install:

    VENV/bin/python .ci/readme_check.py README.md

1. Every command the README shows (``emostream ...`` in its ``sh`` blocks, also as ``.venv/bin/emostream``)
   runs with ``--help`` (``emostream COMMAND --help``, exit 0), and every ``--option`` it uses is one
   that command or the top-level parser offers.
2. The model the README marks "`NAME` (default)" is the code's default: ``DEFAULT_MODEL``, the model
   ``load_model()`` loads, the built-in config's ``[model] name``, and any "(default: X)" in the help
   of ``--model``.

Prints one line per check; exits 1 with every mismatch listed, 0 when all hold.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DEFAULT_MARK = re.compile(r"`([\w.-]+)`\**\s*\(default\)")
HELP_DEFAULT = re.compile(r"--model MODEL\s.*?\(default:?\s*([\w.-]+)\)", re.DOTALL)
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "$("}


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists (after the program name) of every ``emostream`` command in the sh blocks."""
    found: list[list[str]] = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            segment: list[str] = []
            for token in [*list(lexer), ";"]:
                if token in SEPARATORS or set(token) <= set("|&;()"):
                    if segment and Path(segment[0]).name == "emostream":
                        found.append(segment[1:])
                    segment = []
                else:
                    segment.append(token)
    return found


def run_help(exe: Path, args: list[str]) -> tuple[int, str]:
    """Exit code and output of ``exe ARGS --help``."""
    done = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


def commands_of(top_help: str) -> set[str]:
    """The command names listed in the top-level help (indented four spaces)."""
    return set(re.findall(r"^ {4}([a-z][\w-]*)", top_help, re.MULTILINE))


def check_commands(exe: Path, text: str) -> list[str]:
    code, top = run_help(exe, [])
    if code != 0:
        return [f"`emostream --help` exited {code}: {top.strip()[-300:]}"]
    names = commands_of(top)
    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for args in readme_commands(text):
        command = next((a for a in args if a in names), None)
        helps = [top]
        if command is not None:
            code, sub = run_help(exe, [command])
            if code != 0:
                problems.append(f"`emostream {command} --help` exited {code}: {sub.strip()[-300:]}")
                continue
            helps.append(sub)
        for option in (a.split("=", 1)[0] for a in args if a.startswith("--")):
            if not any(re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", h) for h in helps):
                where = " ".join(["emostream", *([command] if command else [])])
                problems.append(
                    f"the README runs `emostream {' '.join(args)}`, but {option} is not an option of `{where}`"
                )
        key = (command or "", *sorted(a for a in args if a.startswith("--")))
        if key not in seen:
            seen.add(key)
            print(f"readme: emostream {' '.join(args)}  (--help of `{command or 'emostream'}` ok)")
    return problems


def check_default_model(exe: Path, text: str) -> list[str]:
    import emostream  # noqa: PLC0415
    from emostream.config import Config  # noqa: PLC0415
    from emostream.inference.metadata import DEFAULT_MODEL  # noqa: PLC0415

    marked = set(DEFAULT_MARK.findall(text))
    if len(marked) != 1:
        return [f'the README should mark exactly one model as "`NAME` (default)"; found {sorted(marked) or "none"}']
    (named,) = marked
    problems: list[str] = []
    loaded = Path(emostream.load_model().path).stem
    for where, value in (
        ("DEFAULT_MODEL", DEFAULT_MODEL),
        ("load_model()", loaded),
        ("config [model] name", Config().model.name),
    ):
        if value != named:
            problems.append(f"the README names `{named}` as the default model, but {where} is `{value}`")
    for command in ([], ["analyze"], ["calls"], ["serve"]):
        _, help_text = run_help(exe, command)
        for value in HELP_DEFAULT.findall(help_text):
            if value != named:
                shown = " ".join(["emostream", *command, "--help"])
                problems.append(f"`{shown}` says the default model is `{value}`; the README and the code say `{named}`")
    print(f"readme: default model `{named}` = DEFAULT_MODEL = load_model() = config [model] name")
    return problems


def main() -> int:
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    exe = Path(sys.executable).parent / "emostream"
    text = readme.read_text(encoding="utf-8")
    problems = check_commands(exe, text) + check_default_model(exe, text)
    for problem in problems:
        print(f"readme check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
