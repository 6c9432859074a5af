"""Every document the code, the README and --help cite is in the repository.

Citations take the form ``docs/<file>.md`` with an optional section,
``docs/<file>.md, "<Heading>"`` (or ``#anchor``). The original SPEC and
ALGORITHMS documents are not in the repository, so citing them is an error.
Repository-relative paths (``benchmarks/...``, ``configs/...``, ...) must
exist; user file names in examples are not checked.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
REPO_DIRS = ("benchmarks", "configs", "data", "docs", "flashseg", "profiles", "tests", ".ci")
DOC_CITE = re.compile(r'docs/([A-Za-z0-9_-]+\.md)(?:(?:,\s*|\s+)(?:section\s+)?"([^"\n]+)"|#([a-z0-9-]+))?')
FORBIDDEN = re.compile(r'\bSPEC\s*(?:§|\d)|ALGORITHMS\.md|SPEC\.md')
REPO_PATH = re.compile(r'(?<![\w./-])((?:' + "|".join(re.escape(d) for d in REPO_DIRS)
                       + r')/[A-Za-z0-9_./-]*[A-Za-z0-9_])')


def _sources():
    files = sorted(ROOT.glob("flashseg/**/*.py")) + [ROOT / "README.md", ROOT / "data" / "README.md",
                                                    ROOT / "Snakefile", ROOT / "pyproject.toml"]
    files += sorted(ROOT.glob("docs/*.md")) + sorted(ROOT.glob("benchmarks/*.py")) + sorted(ROOT.glob("configs/**/*.yaml"))
    files += [f for f in sorted(ROOT.glob("tests/*.py")) if f.name != "test_docs.py"]
    return [(str(f.relative_to(ROOT)), f.read_text(encoding="utf-8")) for f in files if f.exists()]


def _help_texts():
    from flashseg.cli import COMMANDS, cli

    runner = CliRunner()
    out = [("flashseg --help", runner.invoke(cli, ["--help"]).output)]
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        out.append((f"flashseg {name} --help", result.output))
        if name == "tracks":
            for sub in ("coverage",):
                out.append((f"flashseg tracks {sub} --help", runner.invoke(cli, [name, sub, "--help"]).output))
    return out


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines()
            if line.startswith("## ") or line.startswith("### ")}


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def _problems(where: str, text: str) -> list[str]:
    problems = []
    # Help text is wrapped by click: join the lines before looking.
    flat = re.sub(r"\s*\n\s*", " ", text) if where.startswith("flashseg ") else text
    for match in FORBIDDEN.finditer(flat):
        problems.append(f"{where}: cites {match.group(0)!r}, which is not in the repository (cite docs/)")
    for match in DOC_CITE.finditer(flat):
        name, heading, anchor = match.groups()
        doc = ROOT / "docs" / name
        if not doc.exists():
            problems.append(f"{where}: cites docs/{name}, which does not exist")
            continue
        if heading and heading not in _headings(doc):
            problems.append(f"{where}: cites docs/{name}, \"{heading}\": no such section")
        if anchor and anchor not in {_anchor(h) for h in _headings(doc)}:
            problems.append(f"{where}: cites docs/{name}#{anchor}: no such section")
    for match in REPO_PATH.finditer(flat):
        path = match.group(1).rstrip(".")
        if not (ROOT / path).exists():
            problems.append(f"{where}: names {path}, which is not in the repository")
    return problems


def test_cited_documents_and_paths_exist():
    problems = []
    for where, text in _sources() + _help_texts():
        problems += _problems(where, text)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text,bad", [
    ('see docs/model.md, "Tails"', False),
    ('see docs/model.md, "No such section"', True),
    ("see docs/nothing.md", True),
    ("as SPEC §4.2 says", True),
    ("(ALGORITHMS.md, Forward)", True),
    ("benchmarks/bench_core.py", False),
    ("benchmarks/triton_resources.py", True),
    ("docs/algorithms.md#chunk-parallel-passes", False),
    ("write calls.bed.gz and results/x.bed", False),
])
def test_the_check_itself(text, bad):
    assert bool(_problems("example", text)) == bad
