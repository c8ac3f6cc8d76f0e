"""Committed notebooks: no stored outputs, one parameters cell, the shared first cells."""

import json
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
