"""scripts/bench.py runs end to end: a --quick smoke run on a few cases, parsed as JSON.

No timing is asserted (tests never assert wall-clock times); the run must finish,
rewrite the cases, match the native outputs and report every part it ran,
part F under a built-in profile and a user's profile file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench  # noqa: E402


# No pools: nothing is native, every pool is rewritten into its convs or kept.
USER_PROFILE = {
    "name": "user", "source": "test_bench", "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
}


def test_quick_json_run(capsys, tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps(USER_PROFILE))
    argv = ["--quick", "--json", "--skip-scaling", "--only", "resnet_stem,gap,densenet_avg,gmp20", "--profiles", f"tidl,{user}"]
    status = bench.main(argv)
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and not result["part_a"]["errors"]
    rows = {r["name"]: r for r in result["part_a"]["cases"]}
    assert set(rows) == {"resnet_stem", "gap", "densenet_avg"}  # gmp20 is part F's only
    for row in rows.values():
        assert row["status"] == "rewritten" and row["ratio"] > 0 and row["max_abs_err"] < 1e-5
    assert rows["resnet_stem"]["op_counts"].get("Concat", 0) == 0
    steps = result["part_d"]["cases"][0]
    assert steps["name"] == "resnet_stem" and all(steps[s]["ratio"] > 0 for s in result["part_d"]["steps"])
    network = {r["name"]: r for r in result["part_e"]["cases"]}
    assert set(network) == {"resnet_stem", "gap", "densenet_avg"} and all(r["subgraph_us"] > 0 and r["native_pool_us"] > 0 for r in network.values())
    assert result["part_c"]["imported_by_rewriter_cli"]["onnxruntime"] is False

    tidl, user_section = result["part_f"]["profiles"]
    assert (tidl["profile"], user_section["profile"]) == ("tidl", "user")
    for section in (tidl, user_section):
        assert not section["errors"]
        by_name = {r["name"]: r for r in section["cases"]}
        assert list(by_name) == ["resnet_stem", "densenet_avg", "gap", "gmp20"]  # the order
        for r in section["cases"]:
            assert r["convs"] == r["op_counts"].get("Conv", 0) and r["nodes_added"] == sum(r["op_counts"].values())
            if any(p["outcome"] in ("rewritten", "cascade") for p in r["pools"]):
                assert r["timed"] and r["ratio"] > 0 and r["max_abs_err"] < 1e-5
            else:  # nothing changed: ratio 1 without timing, nothing added
                assert not r["timed"] and r["ratio"] == 1.0 and r["nodes_added"] == 0 and r["conv_macs"] == 0
        assert sum(section["outcomes"].values()) == len(section["cases"])  # one pool per case here
    # TIDL runs the 3x3/s2 stem, the 2x2/s2 average and the 7x7 GlobalAveragePool (49 <= 1024) itself.
    for name in ("resnet_stem", "densenet_avg", "gap"):
        row = next(r for r in tidl["cases"] if r["name"] == name)
        assert [p["outcome"] for p in row["pools"]] == ["native"] and row["convs"] == 0
    # The user profile lists no pools: nothing is native. DenseNet's 2x2/s2 average is one
    # depthwise 2x2/s2 conv: 128 channels x 28 x 28 outputs x 4 taps.
    assert user_section["outcomes"]["native"] == 0
    dense = next(r for r in user_section["cases"] if r["name"] == "densenet_avg")
    assert dense["pools"][0]["outcome"] == "rewritten" and dense["op_counts"] == {"Conv": 1}
    assert dense["conv_macs"] == 128 * 28 * 28 * 4
