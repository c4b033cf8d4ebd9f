"""scripts/bench.py runs end to end: a --quick smoke run on two cases, parsed as JSON.

No timing is asserted (tests never assert wall-clock times); the run must finish,
rewrite both cases, match the native outputs and report every part it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench  # noqa: E402


def test_quick_json_run(capsys):
    status = bench.main(["--quick", "--json", "--skip-scaling", "--only", "resnet_stem,gap"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and not result["part_a"]["errors"]
    rows = {r["name"]: r for r in result["part_a"]["cases"]}
    assert set(rows) == {"resnet_stem", "gap"}
    for row in rows.values():
        assert row["status"] == "rewritten" and row["ratio"] > 0 and row["max_abs_err"] < 1e-5
    assert rows["resnet_stem"]["op_counts"].get("Concat", 0) == 0
    steps = result["part_d"]["cases"][0]
    assert steps["name"] == "resnet_stem" and all(steps[s]["ratio"] > 0 for s in result["part_d"]["steps"])
    network = {r["name"]: r for r in result["part_e"]["cases"]}
    assert set(network) == {"resnet_stem", "gap"} and all(r["subgraph_us"] > 0 and r["native_pool_us"] > 0 for r in network.values())
    assert result["part_c"]["imported_by_rewriter_cli"]["onnxruntime"] is False
