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


DOCS = ("lowering.md", "validation.md", "performance.md", "report-schema.md", "architecture.md", "targets.md")


def test_readme_is_a_front_door_linking_the_docs():
    assert len(README.splitlines()) <= 200
    for name in DOCS:
        assert (ROOT / "docs" / name).is_file(), name
        assert f"](docs/{name})" in README, name


def test_every_option_is_in_the_synopsis_and_described_only_by_help():
    from rewriter import cli

    section = README[README.index("## Command line") :]
    synopsis = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
    def named(option: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", synopsis) is not None

    actions = [a.option_strings for a in cli.build_parser()._actions if a.option_strings]
    missing = [spellings for spellings in actions if not any(named(s) for s in spellings)]
    assert actions and not missing, missing
    assert "onnx-poolrewrite --help" in section
    assert not re.search(r"^\|\s*`-", README, re.M), "an option table copies argparse's help"


def test_bench_writes_the_performance_page_below_its_hand_written_text(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    page = (ROOT / "docs" / "performance.md").read_text()
    assert bench.DOCS_MARKER in page and "python scripts/bench.py" in page.split(bench.DOCS_MARKER)[1]
    target = tmp_path / "performance.md"
    target.write_text(f"# kept by hand\n\n{bench.DOCS_MARKER}\nold tables\n")
    env = {"platform": "Linux-x", "cpu_count": 2, "python": "3", "onnxruntime": "1.0", "onnx": "1", "numpy": "2"}
    bench.write_docs(target, ["Part A: table"], env, ["--quick"])
    text = target.read_text()
    assert text.startswith("# kept by hand\n") and "old tables" not in text and "Part A: table" in text
    assert "`python scripts/bench.py --quick`" in text and "Linux-x, 2 CPUs" in text and "onnxruntime 1.0" in text
