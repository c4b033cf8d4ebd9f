"""The README's examples run as written (on the committed demo model)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = README[README.index("## Python API") :]
    start = section.index("```python") + len("```python")
    code = section[start : section.index("```", start)]
    shutil.copy(ROOT / "models" / "demo_cnn.onnx", tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.conv.onnx").exists()
    out = capsys.readouterr().out
    assert "head/gap" in out
    # The graphsurgeon step starts from the file, so it finds the demo's 4 pools to rewrite.
    assert "graphsurgeon: 4 pool node(s) rewritten" in out
    pools = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
    assert not pools & {n.op_type for n in onnx.load(tmp_path / "model.gs.onnx").graph.node}


def test_quick_start_writes_only_into_a_git_ignored_folder(tmp_path):
    section = README[README.index("## Quick start") :]
    block = section[section.index("```sh") + len("```sh") : section.index("```", section.index("```sh") + 5)]
    (command,) = [line for line in block.strip().splitlines() if "onnx-poolrewrite" in line]
    folder = re.search(r"mkdir -p (\S+)", command).group(1)
    assert f"/{folder}/" in (ROOT / ".gitignore").read_text().split()
    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "demo_cnn.onnx", tmp_path / "models" / "demo_cnn.onnx")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["models/demo_cnn.onnx", f"{folder}/demo_cnn.conv.onnx", f"{folder}/demo_report.json"]
