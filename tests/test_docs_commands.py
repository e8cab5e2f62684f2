"""Every shell command of README.md and docs/*.md is a test (tests/doc_commands.py says how each runs).

Each command runs as written (placeholders filled in) in a fresh folder that links to the
repository's files, with downloads refused: offline commands must succeed; commands that need
real data or weights must end in one line that names the missing path, with a non-zero exit and
no traceback. Long ones are `slow`; a few are never run, each with its reason.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import torch

from doc_commands import (CLASSES, GPU, MISSING, NOT_RUN, REDUCED, ROOT, RUN, SLOW, SLOW_MISSING, blocks,
                          classify, commands_of_block, doc_commands, offline_env, working_folder)

COMMANDS = doc_commands()


def unique_commands():
    """Each distinct command once, with every place the docs show it."""
    places = {}
    for command in COMMANDS:
        places.setdefault(command.text, []).append(command.where)
    return places


def run(command: str, tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    """Run a shell command in a repository-like folder under tmp_path, offline; output and errors together."""
    folder = tmp_path / "repo"
    folder.mkdir()
    working_folder(folder)
    return subprocess.run(["bash", "-c", command], cwd=folder, env=offline_env(tmp_path), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def last_line(output: str) -> str:
    """The last non-empty line of a command's output."""
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def params(default_kinds, slow_kinds):
    """pytest params of the unique commands whose class is in either set (slow ones marked slow)."""
    out = []
    for text, places in unique_commands().items():
        cls = classify(text)
        if cls is None:
            continue  # test_every_doc_command_is_classified fails instead
        ident = places[0] + (f" (+{len(places) - 1})" if len(places) > 1 else "")
        if cls.kind in default_kinds:
            out.append(pytest.param(text, cls, id=ident))
        elif cls.kind in slow_kinds:
            marks = [pytest.mark.slow]
            if cls.kind == GPU:
                marks.append(pytest.mark.skipif(not torch.cuda.is_available(), reason=f"needs a GPU: {cls.reason}"))
            out.append(pytest.param(text, cls, id=ident, marks=marks))
        elif cls.kind == NOT_RUN and not default_kinds and not slow_kinds:
            out.append(pytest.param(text, cls, id=ident, marks=pytest.mark.skip(reason=f"not run: {cls.reason}")))
    return out


# ----------------------------------------------------------------- the classification itself

def test_every_doc_command_is_classified():
    """A command no CLASSES row knows (a new doc command) fails here, so none goes untested."""
    unknown = [f"{c.where}: {c.text}" for c in COMMANDS if classify(c.text) is None]
    assert not unknown, "doc commands with no row in tests/doc_commands.py CLASSES:\n" + "\n".join(unknown)
    placeholders = [f"{c.where}: {c.text}" for c in COMMANDS if re.search(r"(?<![\"'\w])<[\w-]+>", c.text)]
    assert not placeholders, "placeholders not in doc_commands.PLACEHOLDERS:\n" + "\n".join(placeholders)


def test_every_class_row_matches_a_doc_command():
    """No stale rows: each pattern of the table still matches some command in the docs."""
    stale = [pattern for pattern, _ in CLASSES if not any(re.search(pattern, c.text) for c in COMMANDS)]
    assert not stale, f"CLASSES rows that match no doc command: {stale}"
    assert any(c.file == "README.md" and "cifar10c.py --cfg cfgs/mnist/compare.yaml" in c.text for c in COMMANDS)


def test_extractor_reads_every_block_kind():
    """Fenced shell blocks, console prompts, indented blocks, continuations, comments, loops; not code."""
    text = "\n".join([
        "```bash", "python a.py --x 1   # a comment", "B=\"2 3\" bash b.sh \\", "    --flag", "```",
        "```console", "$ python c.py", "some output", "```",
        "```", "$ python d.py", "output", "```",
        "```", "tree/   not a command", "```",
        "```python", "import os", "```",
        "text", "", "    python e.py '#not a comment'", "", "    h = ceil(H / 8)", "",
        "    for s in 0 1; do", "      python f.py --s $s", "    done",
    ])
    found = [cmd for body, start in blocks(text) for _, cmd in commands_of_block(body, start)]
    assert found == ["python a.py --x 1", 'B="2 3" bash b.sh --flag', "python c.py", "python d.py",
                     "python e.py '#not a comment'", "for s in 0 1; do\npython f.py --s $s\ndone"]


def test_install_extras_exist():
    """`pip install -e ".[X]"` is not run (it installs); the extra X it names must exist in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    extras = {key.value for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "extras_require"
              for key in node.value.keys}
    named = [m for c in COMMANDS for m in re.findall(r"pip install -e \"?\.\[(\w+)\]", c.text)]
    assert named and set(named) <= extras


# ----------------------------------------------------------------- running the commands

@pytest.mark.parametrize("command,cls", params({RUN, REDUCED}, {SLOW}))
def test_doc_command_runs(command, cls, tmp_path):
    """An offline command exits 0: as written when cheap or under slow, with documented overrides otherwise."""
    if cls.kind == REDUCED:
        command = f"{command} {cls.extra}"
    result = run(command, tmp_path, cls.timeout)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}:\n{result.stdout[-3000:]}"
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("command,cls", params(set(), {REDUCED}))
def test_doc_command_runs_as_written(command, cls, tmp_path):
    """A command the default suite runs reduced, run as the docs write it."""
    result = run(command, tmp_path, cls.timeout)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}:\n{result.stdout[-3000:]}"


@pytest.mark.parametrize("command,cls", params({MISSING}, {SLOW_MISSING}))
def test_doc_command_without_its_data_ends_in_one_line(command, cls, tmp_path):
    """Without the data or weights it needs, a command ends in one error line naming the path, exit != 0."""
    result = run(command, tmp_path, cls.timeout)
    line = last_line(result.stdout)
    assert result.returncode != 0, f"{command} exited 0 without {cls.reason}"
    assert "Traceback" not in result.stdout, result.stdout[-3000:]
    assert "error" in line.lower() and cls.path in line, f"{command}: last line does not name {cls.path}: {line!r}"


@pytest.mark.slow
@pytest.mark.parametrize("command,cls", params(set(), {GPU}))
def test_doc_gpu_command_runs(command, cls, tmp_path):
    """A command that needs a GPU exits 0 where one is present."""
    result = run(command, tmp_path, cls.timeout)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}:\n{result.stdout[-3000:]}"


@pytest.mark.parametrize("command,cls", params(set(), set()))
def test_doc_command_not_run(command, cls):
    """Listed so that the report shows every command the docs hold that no test runs, and why."""


# ----------------------------------------------------------------- links

def heading_anchors(text: str) -> set:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_doc_links_resolve():
    """Every relative link of README.md and docs/*.md names a file of the clone, and its #anchor a heading there."""
    broken = []
    for page in [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")):
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path = (page.parent / target).resolve() if target else page
            if not path.exists() or ROOT not in path.parents and path != ROOT:
                broken.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken, f"links that do not resolve in a clone: {broken}"


def test_every_page_is_linked_from_the_readme():
    """Each page under docs/ is reachable from the README in one click (its Documentation list)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(docs/([^)#\s]+\.md)", readme))
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"pages the README does not link: {sorted(pages - linked)}"


# an upstream citation names its repository (DequanWang/tent#4, microsoft/ProDA issue 20); the
# project's own issue numbers stay in git log, not in the docs
OWN_ISSUE = re.compile(r"(?<![\w/.-])(?:#\d+|[Ii]ssues? \d+)")


def test_docs_cite_no_issue_of_this_project():
    """No page refers to an issue by bare number: history belongs to git log, upstream issues name their repo."""
    found = []
    for page in [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")):
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            text = re.sub(r"\(https?://[^)]*\)", "", line)  # link targets (github.com/.../issues/4) are fine
            text = re.sub(r"[\w.-]+/[\w.-]+#\d+", "", text)  # owner/repo#N
            found += [f"{page.name}:{number}: {m.group(0)}" for m in OWN_ISSUE.finditer(text)]
    assert not found, f"issue references without a repository: {found}"

