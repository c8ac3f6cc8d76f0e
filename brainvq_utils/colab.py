"""Set the project up on Google Colab, from the notebooks' first code cell.

Colab comes with TensorFlow, Keras, numpy, matplotlib and most of the project's other
requirements already installed, built for its GPUs, and already imported by the running
session. ``pip install <project>`` would let pip's resolver upgrade or reinstall any of
them, which costs minutes and leaves the kernel with the old modules loaded until a restart.
So the setup cell clones the repository and :func:`install` runs

* ``pip install --no-deps -e <clone>``: the project alone; pip never touches what is
  installed. Editable, so that the package's folders (``data/``, ``runs/``) are the clone's;
* ``pip install <requirements>`` for only the requirements that nothing installed satisfies
  (:func:`unsatisfied_requirements`), with what is kept pinned as constraints, so that pip
  picks versions of the new packages that fit Colab's own.

:func:`select_precision` then sets ``BRAINVQ_PRECISION`` (the default of the
``prior_precision`` parameter, ``config.ENVIRONMENT_DEFAULTS``) to what the runtime's GPU
computes fastest.

This module runs before the project's requirements are installed: the cell loads it by its
path (``importlib.util.spec_from_file_location``; ``import brainvq_utils`` would import
Keras), so it imports the standard library only. :data:`REPO_URL` is the one place that
holds the repository's address; ``$BRAINVQ_REPO`` points the cell at a fork or a local
clone instead (a test checks that the cell's default equals :data:`REPO_URL`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO_URL = "https://github.com/brainvq/brainvq"
REPO_ENV = "BRAINVQ_REPO"          # overrides REPO_URL (forks, tests)
PRECISION_ENV = "BRAINVQ_PRECISION"  # config.ENVIRONMENT_DEFAULTS: the default of prior_precision
CLONE_DIR = "brainvq"              # the clone's folder, under the current directory (/content on Colab)
NOTEBOOKS_PATH = "notebooks"
BRANCH = "main"


def badge_url(notebook_name: str) -> str:
    """The address that opens a notebook (``01_data_exploration`` or its file name) on Colab."""
    name = notebook_name if notebook_name.endswith(".ipynb") else notebook_name + ".ipynb"
    path = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/{NOTEBOOKS_PATH}/{name}"


def badge_markdown(notebook_name: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url(notebook_name)})"


def setup_cell_source() -> str:
    """The text of every notebook's setup cell (the first code cell; a test keeps them equal)."""
    return f'''\
# Setup: on Colab, clone the project and install what Colab lacks (does nothing anywhere else).
# Colab's own TensorFlow, Keras, numpy and matplotlib are kept (brainvq_utils/colab.py says how).
import os, sys
if "google.colab" in sys.modules:
    import importlib.util, subprocess
    if not os.path.isdir("{CLONE_DIR}"):
        repo = os.environ.get("{REPO_ENV}", "{REPO_URL}")
        subprocess.run(["git", "clone", "--depth", "1", repo, "{CLONE_DIR}"], check=True)
    spec = importlib.util.spec_from_file_location("brainvq_colab", "{CLONE_DIR}/brainvq_utils/colab.py")
    colab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(colab)
    colab.setup("{CLONE_DIR}")  # installs, then picks the precision the GPU computes fastest'''


# ----------------------------------------------------------------------------- requirements
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip vendors packaging but does not expose it; Colab and most environments have it
    Requirement = None


def _normalise(name: str) -> str:
    return canonicalize_name(name) if Requirement is not None else re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, or None where it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def project_requirements(clone) -> list[str]:
    """The ``[project] dependencies`` of the clone's pyproject.toml."""
    with open(Path(clone) / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"].get("dependencies", []))


def _name(requirement: str) -> str:
    return re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)


def check_requirements(requirements, version_of=installed_version):
    """Split requirement strings into ``(unsatisfied, kept)``: the requirements no installed
    distribution satisfies, and ``(name, version)`` of the installed ones that do.
    ``version_of(name)``: the installed version or None (tests pass their own)."""
    unsatisfied, kept = [], []
    for text in requirements:
        if Requirement is None:
            # No `packaging` to read specifiers with: a requirement counts as satisfied when its
            # distribution is installed at all, whatever its version.
            name = _name(text)
            version = version_of(name)
            ok = version is not None
        else:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate():
                continue  # not for this Python or platform
            name, version = req.name, version_of(req.name)
            try:
                ok = version is not None and req.specifier.contains(Version(version), prereleases=True)
            except InvalidVersion:
                ok = False
        if ok:
            kept.append((name, version))
        else:
            unsatisfied.append(text)
    return unsatisfied, kept


def unsatisfied_requirements(clone, version_of=installed_version) -> list[str]:
    """The clone's requirements that what is installed does not satisfy (to install)."""
    return check_requirements(project_requirements(clone), version_of)[0]


def _pip(*args):
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"{' '.join(command[2:])} failed (exit status {result.returncode}); pip's output is above")


def _constraints(kept) -> str:
    """``name==version`` lines for what is kept, so that pip fits the new packages around it
    (none without `packaging` to check that each version can be pinned)."""
    if Requirement is None:
        return ""
    lines = []
    for name, version in kept:
        try:
            Version(version)
        except InvalidVersion:
            continue
        lines.append(f"{name}=={version}\n")
    return "".join(lines)


def install(clone, version_of=installed_version) -> dict:
    """Install the clone without touching what is installed (``--no-deps -e``), then only the
    requirements nothing installed satisfies; print what was installed and what was kept.
    Puts the clone on ``sys.path``: the running kernel reads the editable install's .pth only
    when it restarts. Returns ``{"installed": [...], "kept": [(name, version), ...]}``."""
    clone = Path(clone).resolve()
    _pip("install", "-q", "--disable-pip-version-check", "--no-deps", "-e", str(clone))
    unsatisfied, kept = check_requirements(project_requirements(clone), version_of)
    if unsatisfied:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(_constraints(kept))
        try:
            _pip("install", "-q", "--disable-pip-version-check", "-c", f.name, *unsatisfied)
        finally:
            os.unlink(f.name)
    if str(clone) not in sys.path:
        sys.path.insert(0, str(clone))
    importlib.invalidate_caches()
    print("installed:", ", ".join(unsatisfied) if unsatisfied else "nothing but the project itself")
    print("kept:", ", ".join(f"{name} {version}" for name, version in kept))
    stale = [text for text in unsatisfied if _imported(_name(text))]
    if stale:
        print(f"upgraded {', '.join(stale)}, which this session had imported already: restart the "
              "session (Runtime > Restart session) and run this cell again")
    return {"installed": unsatisfied, "kept": kept}


def _imported(distribution: str) -> bool:
    """Whether a module of the distribution is imported in this process."""
    wanted = _normalise(distribution)
    owners = importlib.metadata.packages_distributions()
    return any(wanted in {_normalise(d) for d in owners.get(module, [module])}
               for module in list(sys.modules) if "." not in module)


# ----------------------------------------------------------------------------- precision
GPU_QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]


def query_gpu() -> str | None:
    """What ``nvidia-smi`` says about the GPUs (one ``name, compute_cap`` line each), or None
    where there is no GPU (no nvidia-smi, or it fails)."""
    try:
        result = subprocess.run(GPU_QUERY, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 and result.stdout.strip() else None


BFLOAT16_SINCE = (8, 0)   # GPUs of this compute capability and later compute in bfloat16 natively


def has_bfloat16(capability) -> bool:
    """Whether a GPU of compute ``capability`` ("8.0", (8, 0), 8.6...) computes in bfloat16
    natively (A100, L4, H100: yes; T4, V100: no). The one place this rule lives
    (``devices.gpu_has_bfloat16`` asks it too)."""
    if isinstance(capability, str):
        capability = tuple(int(part) for part in capability.strip().split(".")[:2])
    elif isinstance(capability, (int, float)):
        capability = tuple(int(part) for part in f"{capability:.1f}".split("."))
    return tuple(capability) >= BFLOAT16_SINCE


def choose_precision(query=query_gpu) -> tuple[str | None, str]:
    """``(precision, reason)`` for the runtime: ``mixed_bfloat16`` on a GPU with native bfloat16
    (compute capability 8.0 or more: A100, L4, H100), ``float32`` on older GPUs (T4, V100), and
    None (the profile's choice) without a GPU. ``query()``: nvidia-smi's answer (tests)."""
    answer = query()
    lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
    if not lines:
        return None, "no GPU: the profile's precision"
    name, _, capability = lines[0].rpartition(",")
    name, capability = name.strip() or capability.strip(), capability.strip()
    try:
        native = has_bfloat16(capability)
    except ValueError:
        return "float32", f"GPU: {name} (compute capability unknown): the prior trains in float32"
    if native:
        return "mixed_bfloat16", (f"GPU: {name} (compute capability {capability}, bfloat16): "
                                  "the prior trains in mixed_bfloat16")
    return "float32", f"GPU: {name} (compute capability {capability}, no bfloat16): the prior trains in float32"


def select_precision(query=query_gpu, environ=os.environ) -> str | None:
    """Set ``$BRAINVQ_PRECISION`` in this process to :func:`choose_precision`'s choice (left as
    it is without a GPU), print which and why, and return it."""
    precision, reason = choose_precision(query)
    if precision is not None:
        environ[PRECISION_ENV] = precision
    print(reason)
    return precision


# ----------------------------------------------------------------------------- the cell
def setup(clone=CLONE_DIR, query=query_gpu) -> dict:
    """What the setup cell calls after cloning: :func:`install` (which also puts the clone on
    ``sys.path``) and :func:`select_precision`."""
    result = install(clone)
    result["precision"] = select_precision(query)
    return result


# ----------------------------------------------------------------------------- the notebooks
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def update_notebooks(folder=Path(__file__).resolve().parents[1] / NOTEBOOKS_PATH) -> list[Path]:
    """Rewrite each notebook's badge (first cell) and setup cell (second cell) from this module,
    after a change of :data:`REPO_URL`; nothing else in the files changes. Returns the files
    that changed. ``python brainvq_utils/colab.py`` runs it."""
    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        intro, setup_cell = nb["cells"][0], nb["cells"][1]
        intro_text = "".join(intro["source"])
        if not BADGE.search(intro_text):
            raise ValueError(f"{path.name}: the first cell has no Open In Colab badge")
        intro["source"] = _lines(BADGE.sub(lambda _: badge_markdown(path.stem), intro_text))
        setup_cell["source"] = _lines(setup_cell_source())
        new_text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for path in update_notebooks():
        print("updated", path)
