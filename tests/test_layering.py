"""The import graph runs one way: the notebooks and the command line on top, the headless runner above
the notebooks' wiring, and the lesson modules (what a student opens to learn the method) below both,
never importing the runner, the run directories, the command line or the Colab setup. And every
module is small enough to read, or says in its first paragraph why it is long."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brainvq_utils"
LESSONS = ["vqvae", "priors", "losses", "sampling", "fast_sampling", "metrics", "realism", "outline", "generation", "codebook"]
FORBIDDEN = ["pipeline", "runner", "runs", "cli", "colab"]
MAX_LINES = 450


def sources(name):
    path = PACKAGE / name
    return sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def imported(path: Path, root: Path = PACKAGE) -> set[str]:
    """The brainvq_utils modules a file imports anywhere (in functions too), as dotted names below the
    package (``from ..runs import x`` in ``priors/base.py`` is ``runs``)."""
    package = list(path.relative_to(root).parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            module = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            out |= {".".join(module)} if node.module else {".".join([*module, a.name]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("brainvq_utils"):
            out.add(node.module.removeprefix("brainvq_utils").lstrip("."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("brainvq_utils").lstrip(".") for a in node.names
                    if a.name.startswith("brainvq_utils")}
    return out


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_modules_import_none_of_the_machinery(lesson):
    for path in sources(lesson):
        bad = sorted(m for m in imported(path) if top(m) in FORBIDDEN)
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


def test_the_wiring_never_imports_the_runner_or_the_command_line():
    for name in ("pipeline", "runner"):
        assert not {top(m) for m in imported(PACKAGE / f"{name}.py")} & ({"cli"} | ({"runner"} if name == "pipeline" else set()))


def test_importing_every_lesson_module_loads_none_of_the_machinery():
    """At run time too, through everything they import (the package's __init__ included)."""
    code = ("import json, sys\n" + "".join(f"import brainvq_utils.{m}\n" for m in LESSONS) +
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'brainvq_utils')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "brainvq_utils.vqvae" in loaded and "brainvq_utils.fast_sampling" in loaded
    assert not [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in FORBIDDEN], loaded


def test_a_forbidden_import_is_seen(tmp_path):
    """The checker itself can fail: lazy imports inside a function, relative and absolute, are found."""
    probe = tmp_path / "brainvq_utils" / "priors" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..runs import write_json\n    from .. import cli\n"
                     "    import brainvq_utils.runner\n    from .base import Prior\n")
    assert imported(probe, tmp_path / "brainvq_utils") == {"runs", "cli", "runner", "priors.base"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_holds_and_is_short_or_says_why_not(path):
    text = path.read_text()
    doc = ast.get_docstring(ast.parse(text))
    assert doc, f"{path.name} has no docstring saying what it holds"
    lines = len(text.splitlines())
    if lines > MAX_LINES:
        first = doc.split("\n\n")[0].lower()
        assert "long" in first, f"{path.name} has {lines} lines; split it, or say in its first paragraph why it is long"
