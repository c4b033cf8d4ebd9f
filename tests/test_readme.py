"""The README's Python API example runs as written (on the committed demo model)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    start = section.index("```python") + len("```python")
    code = section[start : section.index("```", start)]
    shutil.copy(ROOT / "models" / "demo_cnn.onnx", tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.conv.onnx").exists()
    assert "head/gap" in capsys.readouterr().out
