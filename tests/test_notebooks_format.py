"""Committed notebooks: no stored outputs, one parameters cell, the shared first cells."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_data_exploration", "02_vqvae_training", "03_codebook_inspection",
                     "04_pixelcnn_training", "05_generation_and_evaluation"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} keeps outputs; clear them before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    params = "".join(tagged[0]["source"])
    for name in ("profile", "dataset", "data_dir", "run_dir", "overrides", "BRAINVQ_PROFILE"):
        assert name in params, f"{path.name}: parameters cell lacks {name}"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source, f"{path.name} edits sys.path; import the installed package"
    assert "google.colab" in "".join(code[0]["source"]), f"{path.name}: first code cell is not the Colab setup"
    assert "pipeline.start(" in source and "save_figure" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_has_no_control_characters(path):
    """A LaTeX command written with one backslash in a generator script (\\times, \\nu) turns
    into a tab or newline escape and renders as garbage."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        bad = sorted({repr(ch) for ch in text if ord(ch) < 32 and ch != "\n"})
        assert not bad, f"{path.name} {cell.get('id')}: control characters {bad} in the source"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_teach_with_the_package_code_and_end_with_exercises_and_references(path):
    """Each notebook shows mechanisms from the package (no function or class pasted into a cell), ends
    with its exercises and references with links, links the glossary, and 02-05 say what the run found."""
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not [line for line in code.splitlines() if line.startswith(("def ", "class "))], \
        f"{path.name} defines a function or class: put it in the package and show it with teaching.show_source"
    assert "## Try this" in prose and f'exercises.show("{path.stem[:2]}")' in code
    assert "## References" in prose and ("arxiv.org" in prose or "doi.org" in prose)
    assert "../docs/glossary.md" in prose
    if path.stem[:2] != "01":
        assert "## What we found" in prose and f'findings.show(runs.read_metrics(ctx.run_dir), "{path.stem[:2]}"' in code
        assert "teaching.show_source(" in code
    assert not re.search(r"\b(issue|task) \d+\b", prose, re.I), f"{path.name} speaks of an issue number"


def test_the_glossary_defines_the_terms_the_notebooks_italicise():
    glossary = (Path(__file__).parents[1] / "docs" / "glossary.md").read_text().lower()
    entries = re.findall(r"^\*\*(.+?)\.\*\*", glossary, re.M)         # the bold term that opens each entry
    assert len(entries) > 30
    for path in NOTEBOOKS:
        prose = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                          if c["cell_type"] == "markdown" and not "".join(c["source"]).startswith("## References"))
        prose = prose.replace("*italics*", "")          # the sentence that says what italics mean
        for term in re.findall(r"(?<![*\w])\*([A-Za-z][\w -]+?)\*(?![*\w])", prose):
            words = term.lower().rstrip("s")
            assert any(words in entry for entry in entries), f"{path.name}: *{term}* is not in docs/glossary.md"
