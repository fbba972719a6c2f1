"""Benign look-alike samples harvested from text this machine already has.

Real content that a naive matcher reads as an attack: code (Python standard library, C
headers, JavaScript shipped in packages), shell documentation (man pages), prose (package
READMEs, changelogs, docstrings), ``${...}``/``{{...}}`` templates, URLs, file paths, names,
XML/HTML documents and fragments, JSON strings, and YAML (configuration, CI files, OpenAPI
documents shipped in packages) as pasted lines. Each :class:`Sample` is a class label and a
text; the placement into requests is :mod:`wardgate.filters.waf.placements`.

The harvest is deterministic for a given machine (sorted file lists, a fixed seed); the
committed sample (``python -m wardgate.filters.waf.lookalikes --out FILE``) makes the figures
reproducible elsewhere. Nothing here runs on the request path: it reads local files only,
and its string splitting never applies a regular expression to request data.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SEED = 16
CLASSES = ("code", "shell", "prose", "template", "url", "path", "name", "xml", "json", "yaml")
"""Every benign class, in report order."""
MAX_TEXT = 400
"""Samples longer than this are cut (a query value or a form field, not a whole file)."""
MAX_DOCUMENT = 6000
"""XML documents are kept whole up to this size (they are sent as bodies)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One benign text of a content class, with where it came from (a file name)."""

    cls: str
    text: str
    source: str

    def to_json(self) -> str:
        return json.dumps({"class": self.cls, "text": self.text, "source": self.source})


def load(path: Path) -> list[Sample]:
    """Read samples written by :func:`main`."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            out.append(Sample(str(data["class"]), str(data["text"]), str(data["source"])))
    return out


# --- files ---------------------------------------------------------------------------


_REPOSITORY = str(Path(__file__).resolve().parents[4] / "gateway")


def _files(root: Path, suffixes: tuple[str, ...], limit: int = 20000) -> list[Path]:
    """Up to ``limit`` files under ``root`` ending in one of ``suffixes``, sorted."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        if directory.startswith(_REPOSITORY) or "__pycache__" in directory:
            continue  # never our own rules, tests or corpora (the venv is elsewhere)
        for name in sorted(names):
            if name.endswith(suffixes):
                found.append(Path(directory) / name)
                if len(found) >= limit:
                    return found
    return found


def _read(path: Path, limit: int = 200_000) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                data = stream.read(limit)
        else:
            with path.open("rb") as stream:
                data = stream.read(limit)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return ""


def _site_packages() -> list[Path]:
    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    return sorted(root for root in roots if root.is_dir())


# --- harvesters (each yields candidate texts of one class from one file) --------------


def _snippets(text: str, rng: random.Random, lines: int = 3) -> Iterator[str]:
    """Consecutive non-blank lines (1 to ``lines``) from ``text``, dedented and joined."""
    rows = [row for row in text.splitlines() if row.strip()]
    if not rows:
        return
    for _ in range(4):
        start = rng.randrange(len(rows))
        chunk = rows[start : start + rng.randint(1, lines)]
        indent = min(len(r) - len(r.lstrip()) for r in chunk)
        yield "\n".join(r[indent:].rstrip() for r in chunk)


def _code(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    yield from _snippets(text, rng)


def _roff_lines(text: str) -> list[str]:
    """Man page source to text lines: macros dropped, font escapes removed."""
    out = []
    for raw in text.splitlines():
        row = raw
        if row.startswith(('.\\"', "'\\\"")):
            continue
        if row.startswith("."):
            macro, _, rest = row.partition(" ")
            if macro in (".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB", ".RI", ".SH", ".SS"):
                row = rest.replace('"', "")
            else:
                continue
        for escape in ("\\fB", "\\fI", "\\fR", "\\fP", "\\f(CW", "\\&", "\\e", "\\(aq"):
            row = row.replace(escape, "'" if escape == "\\(aq" else "")
        row = row.replace("\\-", "-").replace("\\(em", "-").replace("\\ ", " ").strip()
        if len(row) > 3:
            out.append(row)
    return out


def _shell(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    rows = _roff_lines(text)
    if rows:
        for _ in range(3):
            start = rng.randrange(len(rows))
            yield " ".join(rows[start : start + rng.randint(1, 2)])


def _prose(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    paragraphs = [p for p in text.replace("\r", "").split("\n\n") if len(p.split()) >= 5]
    for _ in range(3):
        if paragraphs:
            words = rng.choice(paragraphs).split()
            start = rng.randrange(max(1, len(words) - 8))
            yield " ".join(words[start : start + rng.randint(8, 40)])


def _docstrings(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    pieces = text.split('"""')
    docs = [pieces[i] for i in range(1, len(pieces), 2) if len(pieces[i].split()) >= 6]
    for _ in range(2):
        if docs:
            yield " ".join(rng.choice(docs).split())


def _between(text: str, opener: str, closer: str, rng: random.Random) -> Iterator[str]:
    """The lines that contain ``opener`` ... ``closer``, trimmed around them."""
    rows = [row.strip() for row in text.splitlines() if opener in row and closer in row]
    for row in rng.sample(rows, min(3, len(rows))):
        start = row.index(opener)
        left = max(0, start - rng.randint(0, 40))
        yield row[left : left + rng.randint(30, 160)].strip()


def _template(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    yield from _between(text, "${", "}", rng)
    yield from _between(text, "{{", "}}", rng)
    yield from _between(text, "{%", "%}", rng)


def _urls(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    found = []
    for word in text.replace("<", " ").replace(">", " ").replace('"', " ").split():
        for scheme in ("https://", "http://", "ftp://"):
            at = word.find(scheme)
            if at >= 0:
                url = word[at:].rstrip(".,;:)]}'`")
                if len(url) > len(scheme) + 3:
                    found.append(url)
    for url in rng.sample(found, min(3, len(found))):
        yield url


def _names(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    """People's names from copyright files (``Copyright 2004 Jane O'Neil <jane@...>``)."""
    for raw in text.splitlines():
        row = raw.strip()
        lowered = row.lower()
        if not lowered.startswith(("copyright", "upstream-contact", "maintainer")):
            continue
        row = row.split(":", 1)[-1] if lowered.startswith(("upstream", "maint")) else row
        words = [w for w in row.replace(",", " ").split() if w[:1].isalpha() or w[:1] in "<("]
        words = [w for w in words if w.lower() not in ("copyright", "copyright:", "(c)", "by")]
        if 2 <= len(words) <= 8:
            yield " ".join(words)
            if rng.random() < 0.5:
                return


def _xml(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    body = text.strip()
    if body.startswith("<") and len(body) <= MAX_DOCUMENT:
        yield body
    elif body.startswith("<"):
        # A fragment: a run of whole lines (text with markup, as pasted into a field).
        yield from _snippets(body, rng, lines=4)


def _json(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return
    strings: list[str] = []

    def walk(node: object, depth: int) -> None:
        if depth > 20 or len(strings) > 2000:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                strings.append(str(key))
                walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)
        elif isinstance(node, str):
            strings.append(node)

    walk(document, 0)
    strings = [s for s in strings if len(s) >= 4]
    yield from rng.sample(strings, min(3, len(strings)))


def _yaml(path: Path, text: str, rng: random.Random) -> Iterator[str]:
    """A run of 1 to 4 lines of a YAML file (``key: value`` lines, lists, block text), as
    pasted into a field; comment-only runs are skipped."""
    for snippet in _snippets(text, rng, lines=4):
        if not all(row.lstrip().startswith("#") for row in snippet.splitlines()):
            yield snippet


# --- the harvest ----------------------------------------------------------------------

Harvester = Callable[[Path, str, random.Random], Iterable[str]]


def _paths(rng: random.Random, count: int) -> list[Sample]:
    """Real file paths of this machine (absolute, relative and Windows-style)."""
    roots = [Path("/usr/share"), Path("/usr/lib"), *_site_packages()]
    files: list[Path] = []
    for root in roots:
        files.extend(_files(root, ("",), limit=30000))
    out = []
    for path in rng.sample(files, min(count, len(files))):
        text = str(path)
        style = rng.random()
        if style < 0.25:
            parts = path.parts[-rng.randint(1, 3) :]
            text = "/".join(parts)
        elif style < 0.35:
            text = "C:\\Users\\dev\\" + "\\".join(path.parts[-2:])
        elif style < 0.45:
            text = "./" + "/".join(path.parts[-2:])
        out.append(Sample("path", text, "filesystem"))
    return out


def harvest(
    per_class: int = 150, seed: int = SEED, classes: tuple[str, ...] = CLASSES
) -> list[Sample]:
    """Up to ``per_class`` distinct samples of every class in ``classes`` (each class draws
    from its own generator, seeded with ``seed`` and its name, so harvesting one class alone
    gives the same samples as the full harvest)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = _site_packages()
    doc = Path("/usr/share/doc")
    sources: dict[str, list[tuple[list[Path], Harvester]]] = {
        "code": [
            (_files(stdlib, (".py",)), _code),
            (_files(Path("/usr/include"), (".h",)), _code),
            ([p for root in site for p in _files(root, (".js",), 3000)], _code),
        ],
        "shell": [
            (
                [
                    p
                    for p in _files(Path("/usr/share/man"), (".gz",))
                    if not p.name.startswith("gcloud")  # 15,000 pages of one tool
                ],
                _shell,
            )
        ],
        "prose": [
            (_files(doc, ("README", ".md", ".txt", "changelog.gz", "NEWS.gz")), _prose),
            (_files(stdlib, (".py",)), _docstrings),
        ],
        "template": [
            (_files(Path("/usr/share"), (".sh", ".mk", ".in", ".conf", ".html", ".j2")), _template),
            ([p for root in site for p in _files(root, (".html", ".j2", ".py", ".sh"))], _template),
        ],
        "url": [
            (_files(doc, ("copyright", "README", ".md")), _urls),
            (_files(stdlib, (".py",)), _urls),
        ],
        "name": [(_files(doc, ("copyright",)), _names)],
        "xml": [
            (_files(Path("/usr/share"), (".xml", ".xsd", ".svg", ".xsl", ".html")), _xml),
            ([p for root in site for p in _files(root, (".xml", ".html", ".xsd"))], _xml),
        ],
        "json": [([p for root in site for p in _files(root, (".json",))], _json)],
        "yaml": [
            ([p for root in site for p in _files(root, (".yaml", ".yml"))], _yaml),
            (_files(Path("/usr/share"), (".yaml", ".yml")), _yaml),
        ],
    }
    samples: list[Sample] = []
    for cls in classes:
        rng = random.Random(f"{seed}:{cls}")
        if cls == "path":
            samples.extend(_paths(rng, per_class))
            continue
        seen: set[str] = set()
        picked: list[Sample] = []
        pools = [(files, fn) for files, fn in sources[cls] if files]
        attempts = 0
        while pools and len(picked) < per_class and attempts < per_class * 40:
            attempts += 1
            files, fn = pools[attempts % len(pools)]
            path = rng.choice(files)
            text = _read(path)
            if not text:
                continue
            for found in fn(path, text, rng):
                limit = MAX_DOCUMENT if cls == "xml" else MAX_TEXT
                candidate = found.strip()[:limit]
                if len(candidate) < 4 or candidate in seen or "\x00" in candidate:
                    continue
                seen.add(candidate)
                picked.append(Sample(cls, candidate, str(path)))
                break
        samples.extend(picked)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wardgate.filters.waf.lookalikes")
    parser.add_argument("--out", type=Path, help="write JSONL here (default: stdout)")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated")
    args = parser.parse_args(argv)
    classes = tuple(c for c in args.classes.split(",") if c)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        parser.error(f"unknown classes {unknown} (known: {', '.join(CLASSES)})")
    lines = [s.to_json() for s in harvest(args.per_class, args.seed, classes)]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
