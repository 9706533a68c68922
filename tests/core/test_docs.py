"""The documentation a new user follows: README.md and every Markdown page under docs/.

Each page must speak of the product alone (no absolute path of someone's machine, no
development session, no issue number), and every command in a fenced block must run as
written: a `modality-synth` subcommand and its options must exist in the real parser, a
`scripts/...` file in the repository, a `make` target in the Makefile. The checks read
the argparse parser itself, so a subcommand or option added later is accepted without
editing this file.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from pathlib import Path

import pytest

from synth_core.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# An absolute path: "/" not preceded by a word, a dot, a colon or another slash (so
# URLs, "T1/T2" and "../x" pass), then at least two path components ("/year" in
# "log-slope /year" is a unit, not a path). Windows drive paths too.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\]>)-])/(?:[\w.+-]+/)+[\w.+-]*|\b[A-Za-z]:\\[\w\\.-]+")
# A development session ("the fourth session", "this session", "session 3").
SESSION = re.compile(
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|this|that|previous"
    r"|earlier|later|next|last|development|coding|work(?:ing)?)\s+sessions?\b"
    r"|\bsessions?\s+#?\d+\b",
    re.IGNORECASE,
)
# An issue or pull-request number ("issue 3", "issue #16", "#16", "PR 12").
ISSUE = re.compile(r"\b(?:issues?|PRs?|pull requests?)\s*#?\d+\b|(?<![\w&#])#\d+\b", re.IGNORECASE)
# The project's own numbering of the papers it implements ("paper 001"): cite them by
# authors, title and venue (docs/references.md) instead.
PAPER_NUMBER = re.compile(r"\bpaper\s+0\d\d\b", re.IGNORECASE)
# A relative path or link ("../x", "[text](path)"), checked against the repository.
RELATIVE = re.compile(r"(?<![\w/.])(?:\.\./)+[\w./-]*")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")

FENCE = re.compile(r"^(```|~~~)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text", "zsh"}
ELIDED = {"...", "…", "…/"}


@functools.cache
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("modality-synth has no subcommands")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


@functools.cache
def _make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE) for t in line.split()}
    return frozenset(targets | phony)


def _shell_blocks(text: str) -> list[str]:
    return [body for _, lang, body in FENCE.findall(text) if lang.lower() in SHELL_LANGUAGES]


def _commands(block: str) -> list[list[str]]:
    """Each shell command of a block as tokens: continuations joined, comments dropped,
    split at `&&`, `||`, `;` and `|`; a line shlex cannot read is split on blanks."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            tokens = line.split("#", 1)[0].split()
        current: list[str] = []
        for token in tokens:
            if token in {"&&", "||", ";", "|"}:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _cli_problems(tokens: list[str], subcommands: dict[str, argparse.ArgumentParser]) -> list[str]:
    """Problems of one command line that calls modality-synth (none for other commands)."""
    starts = [i for i, t in enumerate(tokens)
              if t == "modality-synth" or t.endswith("/modality-synth")
              or (t == "synth_core.cli" and i > 0 and tokens[i - 1] == "-m")]
    if not starts:
        return []
    rest = tokens[starts[0] + 1:]
    words = [t for t in rest if not t.startswith("-")]
    if not words or words[0] in ELIDED:
        return []  # `modality-synth --help`, or an elided "modality-synth ... --resume"
    name = words[0]
    if name not in subcommands:
        return [f"`modality-synth {name}` is not a subcommand (have: {', '.join(sorted(subcommands))})"]
    known = _options(subcommands[name]) | {"-h", "--help", "--debug"}
    problems = []
    for token in rest:
        option = token.strip("[](){}").split("=", 1)[0]
        if option.startswith("--") and len(option) > 2 and option not in known:
            problems.append(f"`modality-synth {name}` has no option {option}")
    return problems


def _block_problems(block: str, subcommands: dict[str, argparse.ArgumentParser],
                    targets: frozenset[str]) -> list[str]:
    problems = []
    for tokens in _commands(block):
        problems += _cli_problems(tokens, subcommands)
        if tokens[0] == "make":
            problems += [f"`make {t}` is not a Makefile target" for t in tokens[1:]
                         if not t.startswith("-") and "=" not in t and t not in targets]
    return problems


def _script_problems(text: str) -> list[str]:
    """Every `scripts/NAME` a page names, fenced or not, must be in the repository."""
    return [f"names scripts/{name}, which does not exist"
            for name in sorted(set(re.findall(r"(?<![\w/.])scripts/([\w.-]+\.(?:py|sh))", text)))
            if not (ROOT / "scripts" / name).is_file()]


def _path_problems(text: str, folder: Path) -> list[str]:
    """Relative paths must stay inside the repository, and links must lead to a file."""
    problems = []
    for match in RELATIVE.finditer(text):
        where = (folder / match.group(0)).resolve()
        if ROOT not in [where, *where.parents]:
            problems.append(f"path outside the repository {match.group(0)!r}")
        elif not where.exists():
            problems.append(f"path to a missing file {match.group(0)!r}")
    for target in LINK.findall(text):
        if "://" not in target and not target.startswith("mailto:") and not (folder / target).exists():
            problems.append(f"link to a missing file {target!r}")
    return problems


def page_problems(text: str, folder: Path = ROOT) -> list[str]:
    """Everything wrong with one page's text, one line each (empty: the page is fine);
    ``folder``: where the page lives, for its relative links."""
    subcommands, targets = _subcommands(), _make_targets()
    problems = [f"absolute path {m.group(0)!r}" for m in ABSOLUTE_PATH.finditer(text)]
    problems += [f"development session {m.group(0)!r}" for m in SESSION.finditer(text)]
    problems += [f"issue number {m.group(0)!r}" for m in ISSUE.finditer(text)]
    problems += [f"internal paper number {m.group(0)!r}" for m in PAPER_NUMBER.finditer(text)]
    problems += _path_problems(text, folder)
    for block in _shell_blocks(text):
        problems += _block_problems(block, subcommands, targets)
    return problems + _script_problems(text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_speaks_of_the_product_and_its_commands_run(page: Path) -> None:
    problems = page_problems(page.read_text(encoding="utf-8"), page.parent)
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_there_are_pages_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/user-guide.md", "docs/architecture.md"} <= names


# The checker itself: each rule catches what it is for and passes what it is not for.

def test_checker_catches_each_kind_of_mistake() -> None:
    bad = {
        "data in /work/data/phantom24 here": "absolute path",
        "see C:\\Users\\me\\scan.nii": "absolute path",
        "measured in the fifth session": "development session",
        "as the issue 3 asked": "issue number",
        "fixed in #16": "issue number",
        "```bash\nmodality-synth regist cohort/ -o out\n```": "not a subcommand",
        "```bash\nmodality-synth translate a.nii.gz -o b.nii.gz --method pix2pix --to pet --nope\n```":
            "has no option --nope",
        "```\n.venv/bin/modality-synth train --method x --data d \\\n    --from t1 --to t2 --out r --wrong 1\n```":
            "has no option --wrong",
        "run `python scripts/no_such_probe.py`": "scripts/no_such_probe.py",
        "```bash\nmake benchmarks\n```": "not a Makefile target",
        "(paper 001 in `../shared/papers/`)": "internal paper number",
        "the papers in `../../../shared/papers/`": "path outside the repository",
        "the figure in ../figures/none.png": "path to a missing file",
        "see [the results](docs/no-such-page.md)": "link to a missing file",
    }
    for text, expected in bad.items():
        problems = page_problems(text, ROOT / "docs" / "methods")
        assert any(expected in p for p in problems), (text, problems)


def test_checker_passes_what_is_fine() -> None:
    fine = (
        "T1/T2 and back; SSIM / PSNR; a slope of -0.0056 /year; see ../user-guide.md and "
        "https://example.org/a/b; `OUT_DIR/sub-XXX/sub-XXX_t1.nii.gz`; a napari session; "
        "[the guide](../user-guide.md#install)\n"
        "```bash\n"
        "modality-synth phantom cohort/ --subjects 12 --seed 3 --preset small\n"
        ".venv/bin/modality-synth translate in.nii.gz -o out.nii.gz --method bi-dpm --to t2 \\\n"
        "    --steps 2   # a comment --not-an-option\n"
        "modality-synth train ... --out runs/x --resume\n"
        "modality-synth train --method bi-dpm --data d --from t1 --to t2 --out r --set a=b\n"
        "make demo && python scripts/demo.py\n"
        "```\n"
        "```python\nimport synth_core  # modality-synth nonsense is not a shell line here\n```\n"
    )
    assert page_problems(fine, ROOT / "docs" / "methods") == []


# A translate example without --checkpoint relies on a default checkpoint: a new user with
# a clean clone has only the bundled ones (and whatever the same block trains first).

BUNDLED = ROOT / "src" / "synth_core" / "checkpoints"


def _card_directions(card: dict) -> set[tuple[str, str, str]]:
    """(method, source, target) for every direction a card's checkpoint runs, read from the
    JSON card alone (no torch): any-to-any over its modalities, else its source to its
    target, and back when its capabilities say bidirectional."""
    method = str(card.get("method"))
    if card.get("any_to_any"):
        mods = list(card.get("modalities", []))
        return {(method, a, b) for a in mods for b in mods if a != b}
    source, target = str(card.get("source")), str(card.get("target"))
    pairs = {(method, source, target)}
    if card.get("capabilities", {}).get("bidirectional"):
        pairs.add((method, target, source))
    return pairs


@functools.cache
def _bundled_directions() -> frozenset[tuple[str, str, str]]:
    import json

    cards = [json.loads(p.read_text(encoding="utf-8")) for p in BUNDLED.glob("*/model.json")]
    return frozenset(d for card in cards for d in _card_directions(card))


def _option(tokens: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command, None if absent."""
    for i, token in enumerate(tokens):
        if token == name and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def _trained_directions(tokens: list[str]) -> set[tuple[str, str, str]]:
    """Directions a `modality-synth train` command makes available as the user's checkpoint."""
    method = _option(tokens, "--method")
    if method is None:
        return set()
    mods = _option(tokens, "--modalities")
    if mods:
        names = mods.split(",")
        return {(method, a, b) for a in names for b in names if a != b}
    source, target = _option(tokens, "--from"), _option(tokens, "--to")
    if source is None or target is None:
        return set()
    pairs = {(method, source, target)}
    from synth_core.methods.base import get_method_class  # only here: it imports torch

    try:
        if get_method_class(method).capabilities.bidirectional:
            pairs.add((method, target, source))
    except Exception:  # an unknown method is reported by the option checks, not here
        pass
    return pairs


def _subcommand(tokens: list[str]) -> str | None:
    for i, token in enumerate(tokens):
        if token == "modality-synth" or token.endswith("/modality-synth") or (
                token == "synth_core.cli" and i > 0 and tokens[i - 1] == "-m"):
            words = [t for t in tokens[i + 1:] if not t.startswith("-")]
            return words[0] if words else None
    return None


def _default_checkpoint_problems(block: str,
                                 bundled: frozenset[tuple[str, str, str]]) -> list[str]:
    """A translate line without --checkpoint must ask for a direction some bundled card
    offers, or one an earlier `train` line of the same block makes and a `models --default`
    line after it makes the default."""
    available, trained = set(bundled), set()
    problems = []
    for tokens in _commands(block):
        name = _subcommand(tokens)
        if name == "train":
            trained |= _trained_directions(tokens)
        if name == "models" and _option(tokens, "--default") is not None:
            # A user checkpoint is never chosen merely because it exists: only once made
            # default (the name `train` printed) does translate pick it without --checkpoint.
            available |= trained
        if name != "translate" or _option(tokens, "--checkpoint") is not None:
            continue
        method, targets = _option(tokens, "--method"), _option(tokens, "--to")
        if method is None or targets is None or not re.fullmatch(r"[a-z0-9-]+", method):
            continue  # a synopsis ("--method KEY --to MOD[,MOD...]") names no checkpoint
        source = _option(tokens, "--from")
        for target in targets.split(","):
            if not any(m == method and t == target and (source is None or s == source)
                       for m, s, t in available):
                where = f"{source} -> {target}" if source else f"to {target}"
                problems.append(
                    f"`translate --method {method}` {where} has no bundled checkpoint: train it "
                    "first in the same block and make it the default, or pass --checkpoint")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_translate_examples_use_a_checkpoint_a_clean_clone_has(page: Path) -> None:
    bundled = _bundled_directions()
    problems = [p for block in _shell_blocks(page.read_text(encoding="utf-8"))
                for p in _default_checkpoint_problems(block, bundled)]
    assert not problems, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_bundled_cards_are_read() -> None:
    # The two bundled checkpoints: pix2pix T1 -> PET one way, Bi-DPM T1 <-> T2 both ways.
    assert _bundled_directions() >= {("pix2pix", "t1", "pet"), ("bi-dpm", "t1", "t2"),
                                     ("bi-dpm", "t2", "t1")}
    assert ("pix2pix", "pet", "t1") not in _bundled_directions()


def test_default_checkpoint_check_catches_and_passes() -> None:
    bundled = frozenset({("pix2pix", "t1", "pet"), ("bi-dpm", "t1", "t2"), ("bi-dpm", "t2", "t1")})
    bad = [
        "modality-synth translate a.nii.gz -o b.nii.gz --method bi-dpm --to ct",
        "modality-synth translate a.nii.gz -o out --method pix2pix --to pet,t2",
        "modality-synth translate a.nii.gz -o b.nii.gz --method pix2pix --from pet --to t1",
        # trained after, not before
        "modality-synth translate a -o b --method cyclegan --to t2\n"
        "modality-synth train --method cyclegan --data d --from t1 --to t2 --out r",
        # trained but never made the default
        "modality-synth train --method pix2pix --data d --from t1 --to ct --out r\n"
        "modality-synth translate a -o b --method pix2pix --to ct",
    ]
    for block in bad:
        assert _default_checkpoint_problems(block, bundled), block
    fine = [
        "modality-synth translate a.nii.gz -o b.nii.gz --method pix2pix --to pet",
        ".venv/bin/modality-synth translate a -o b --method bi-dpm --from t2 --to t1 --steps 1",
        "modality-synth translate a -o b --method bi-dpm --to ct --checkpoint runs/ct",
        "modality-synth train --method pix2pix --data d --from t1 --to ct --out r\n"
        "modality-synth models --default pix2pix-t1-ct-r\n"
        "modality-synth translate a -o b --method pix2pix --to ct",
        # a bidirectional method trained one way runs the other way too
        "modality-synth train --method cyclegan --data d --from t1 --to t2 --out r\n"
        "modality-synth models --default cyclegan-t1-t2-r\n"
        "modality-synth translate a -o b --method cyclegan --from t2 --to t1",
    ]
    for block in fine:
        assert _default_checkpoint_problems(block, bundled) == [], block
