"""Target profiles (``--target``): loading and validating them, and the pools a target runs natively."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from rewriter import PoolRewritePass, rewrite_model
from rewriter.cli import main
from rewriter.fit import audit_violations
from rewriter.target import Target
from rewriter.native_pools import native_refusal
from rewriter.profile import PoolLimits, Range
from rewriter.profiles import BUILTIN_NAMES, ProfileError, load_profile, parse_profile, profile_dict
from rewriter.selection import kept_by_request
from rewriter.spec import global_pool_spec, pool_spec_from_attributes
from compat import TEST_OPSET

SHAPE = [1, 4, 16, 16]
POOL_OPS = {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"}

# The issue's user profile: no Concat, kernels <= 5, strides <= 2, no dilation, pads below the kernel.
USER_PROFILE = {
    "name": "my-npu",
    "source": "our vendor's datasheet, table 4",
    "ops": ["Conv", "Relu", "Add"],
    "conv": {"kernel": [1, 5], "stride": [1, 2], "dilation": [1, 1], "pad_below_kernel": True},
    "pools": {"MaxPool": {"kernel": [1, 3], "stride": [1, 2], "pad": [0, 1], "ceil_mode": False}},
}


def pools_model(pools: dict[str, tuple[str, dict]]) -> onnx.ModelProto:
    """x -> Relu, then one pool per entry ``name: (op, attrs)``, each to its own output."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    outputs = []
    for name, (op, attrs) in pools.items():
        nodes.append(helper.make_node(op, ["r"], [f"{name}_out"], name=name, **attrs))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TEST_OPSET)])
    model.ir_version = 10
    return model


SPP13 = ("MaxPool", dict(kernel_shape=[13, 13], pads=[6, 6, 6, 6]))
VGG = ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]))
STEM = ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
SPPF5 = ("MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
CEIL = ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
AVG_CIP0 = ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0))
AVG_CIP1 = ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1))
VGG_S1 = ("MaxPool", dict(kernel_shape=[2, 2]))
GAP = ("GlobalAveragePool", {})
GMP = ("GlobalMaxPool", {})

# Per built-in profile: which pools it runs natively (kept) and which it does not (rewritten).
CASES = {
    "nvidia-dla": dict(native={"vgg": VGG, "stem": STEM, "avg_cip0": AVG_CIP0}, rewritten={"spp13": SPP13, "ceil": CEIL, "gap16": GAP, "gmp16": GMP}),
    "rknn": dict(native={"sppf5": SPPF5, "avg_cip1": AVG_CIP1, "gap16": GAP}, rewritten={"spp13": SPP13, "avg_cip0": AVG_CIP0, "ceil": CEIL}),
    "tidl": dict(native={"stem": STEM, "vgg": VGG, "gap16": GAP}, rewritten={"vgg_s1": VGG_S1, "sppf5": SPPF5, "gmp16": GMP, "ceil": CEIL}),
    # issue 23: Vela runs these pools on the NPU; its GAP (MEAN) costs more than the rewrite
    "ethos-u": dict(native={"spp13": SPP13, "stem": STEM, "avg_cip0": AVG_CIP0, "avg_cip1": AVG_CIP1}, rewritten={"ceil": CEIL, "gap16": GAP, "gmp16": GMP}),
    # a TFLite delegate's profile: nothing native, the output only has to convert
    "tflite": dict(native={}, rewritten={"sppf5": SPPF5, "stem": STEM, "avg_cip0": AVG_CIP0, "gap16": GAP}),
}
WITH_MAXPOOL = [name for name in BUILTIN_NAMES if name != "tflite"]


def run_cli(tmp_path: Path, model: onnx.ModelProto, *options: str) -> tuple[int, onnx.ModelProto, dict]:
    src, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, src)
    code = main([str(src), str(out), "-q", "--report", str(report), *options])
    written = onnx.load(out) if out.exists() else None
    return code, written, json.loads(report.read_text()) if report.exists() else {}


# -- loading -------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_loads_with_its_source_and_round_trips(name):
    profile = load_profile(name)
    assert profile.name == name and profile.source
    assert {"Conv", "Relu", "Add", "Concat"} <= profile.ops
    assert set(profile.pools) <= POOL_OPS and ({"MaxPool", "AveragePool"} <= set(profile.pools) or name == "tflite")
    assert parse_profile(json.loads(json.dumps(profile_dict(profile))), name) == profile


def test_builtin_numbers_are_the_issues():
    dla, rknn, tidl = (load_profile(n) for n in ("nvidia-dla", "rknn", "tidl"))
    assert dla.ops == {"Conv", "Relu", "Add", "Concat", "Max"} and dla.concat_axes == (1,)
    assert (dla.conv.kernel, dla.conv.stride, dla.conv.dilation, dla.conv.pad) == (Range(1, 32), Range(1, 8), Range(1, 32), Range(0, 31))
    assert dla.conv.pad_below_kernel and dla.conv.spatial_ranks == (2,)
    assert dla.pools["MaxPool"] == PoolLimits(kernel=Range(1, 8), stride=Range(1, 16), pad=Range(0, 7), ceil_mode=False, dilation=False, spatial_ranks=(2,))
    assert dla.pools["GlobalAveragePool"].global_max_extent == 8
    assert (rknn.conv.kernel, rknn.conv.stride, rknn.conv.pad, rknn.conv.dilation) == (Range(1, 31), Range(1, 7), Range(0, 15), None)
    # auto_pad: judged on the resolved pads (measured on rk3588, issue 22), no field
    assert rknn.pools["AveragePool"].count_include_pad == (1,) and rknn.pools["MaxPool"].auto_pad is None
    assert rknn.pools["MaxPool"].count_include_pad is None and rknn.pools["GlobalMaxPool"].global_max_extent == 343
    assert tidl.conv.equal_strides and tidl.conv.dilation_only_at_stride_1 and tidl.conv.depthwise_kernels == ((3, 3, 1), (5, 5, 1), (7, 7, 1), (3, 3, 2))
    assert tidl.concat_axes == (1, 2, 3) and tidl.pools["GlobalAveragePool"].global_max_area == 1024
    assert (2, 1) not in tidl.pools["MaxPool"].windows and "GlobalMaxPool" not in tidl.pools


def test_the_ethos_u_and_tflite_numbers_are_the_issues():
    # issue 23: Vela 5.2.0's SUPPORTED_OPS.md, and onnx2tf 2.6.9's measured conv rule
    ethos, tflite = load_profile("ethos-u"), load_profile("tflite")
    for profile in (ethos, tflite):
        assert profile.conv.dilation == Range(1, 1) and profile.conv.dilation_only_at_stride_1 and profile.conv.spatial_ranks == (2,)
    assert ethos.conv.stride == Range(1, 3) and tflite.conv.stride is None and tflite.pools == {}
    assert ethos.pools["MaxPool"].kernel == Range(1, 256) and ethos.pools["MaxPool"].padded_stride is None
    average = ethos.pools["AveragePool"]
    assert (average.kernel, average.padded_kernel, average.padded_stride) == (Range(1, 256), Range(1, 8), Range(1, 3))
    gap = ethos.pools["GlobalAveragePool"]
    assert (gap.global_max_extent, gap.global_max_area) == (4095, 16777216)
    assert "0.68x" in gap.rewrite_even_if_native.measured and "Vela" in gap.rewrite_even_if_native.source
    assert "GlobalMaxPool" not in ethos.pools


@pytest.mark.parametrize(
    "pool, spatial, native",
    [
        (("AveragePool", dict(kernel_shape=[8, 8], pads=[4, 4, 3, 3], count_include_pad=0)), (16, 16), True),
        (("AveragePool", dict(kernel_shape=[9, 9], pads=[4, 4, 4, 4], count_include_pad=0)), (16, 16), False),  # padded kernel 9 > 8
        (("AveragePool", dict(kernel_shape=[9, 9])), (16, 16), True),  # VALID: up to 256
        (("AveragePool", dict(kernel_shape=[5, 5], strides=[4, 4], pads=[2, 2, 2, 2])), (40, 40), False),  # padded stride 4 > 3
        (("AveragePool", dict(kernel_shape=[4, 4], strides=[4, 4])), (40, 40), True),  # VALID stride 4
        (("MaxPool", dict(kernel_shape=[5, 5], strides=[4, 4], pads=[2, 2, 2, 2])), (40, 40), True),  # PAD + VALID: measured on the NPU
    ],
)
def test_ethos_u_judges_padded_pools_by_their_padded_limits(pool, spatial, native):
    op, spec = spec_of(pool, spatial)
    why = native_refusal(op, spec, load_profile("ethos-u").pools[op])
    assert (why is None) == native, why
    if not native:
        assert why.startswith("padded ")


def test_the_cost_rule_rewrites_a_native_gap_and_the_audit_does_not_flag_it():
    gap = "GlobalAveragePool"
    limits = load_profile("ethos-u").pools[gap]
    spec = global_pool_spec("average", (20, 20))
    assert native_refusal(gap, spec, limits).startswith("rewritten even where native: ")
    assert native_refusal(gap, spec, limits, cost_rules=False) is None  # Vela runs it (MEAN)
    rows = audit_violations(pools_model({"gap16": GAP}), Target.of(profile=load_profile("ethos-u")))
    assert [r for r in rows if r["op_type"] == gap] == []
    # without the rule the same limits keep it native
    model = pools_model({"gap16": GAP})
    assert PoolRewritePass(target="ethos-u")(model).report.nodes[0].status == "rewritten"
    plain = parse_profile({**profile_dict(load_profile("ethos-u")), "name": "no-rule", "pools": {gap: {"global_max_extent": 4095}}}, "no-rule.json")
    assert PoolRewritePass(target=plain)(model).report.nodes[0].reason == "runs natively on no-rule"


def test_a_user_profile_file_round_trips(tmp_path):
    path = tmp_path / "my-npu.json"
    path.write_text(json.dumps(USER_PROFILE))
    profile = load_profile(str(path))
    assert profile.name == "my-npu" and profile.ops == {"Conv", "Relu", "Add"} and profile.conv.dilation == Range(1, 1)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(profile_dict(profile)))
    assert load_profile(str(again)) == profile
    # The name defaults to the file's stem.
    (tmp_path / "bare.json").write_text("{}")
    assert load_profile(str(tmp_path / "bare.json")).name == "bare"


BAD_PROFILES = [
    ({"name": "x", "conv": {"kernal": [1, 3]}}, "conv.kernal: unknown key (did you mean 'kernel'?)"),
    ({"name": "x", "colour": "red"}, "colour: unknown key"),
    ({"name": "x", "conv": {"kernel": 3}}, "conv.kernel: expected [min, max] integers"),
    ({"name": "x", "conv": {"kernel": [1.5, 3]}}, "conv.kernel: expected [min, max] integers"),
    ({"name": "x", "conv": {"stride": [4, 2]}}, "conv.stride: min 4 > max 2"),
    ({"name": "x", "conv": {"pad": [-1, 2]}}, "conv.pad: min -1 is below 0"),
    ({"name": "x", "conv": {"pad_below_kernel": 1}}, "conv.pad_below_kernel: expected true or false"),
    ({"name": "x", "conv": {"max_kernel_area": -4}}, "conv.max_kernel_area: -4 is below 1"),
    ({"name": "x", "conv": {"depthwise_kernels": [[3, 3]]}}, "conv.depthwise_kernels: expected a list of [kh, kw, stride]"),
    ({"name": "x", "concat_axes": [-1]}, "concat_axes: -1 is not allowed"),
    ({"name": "x", "ops": ["Conv", "relu"]}, "ops: 'relu' is no ONNX op type (did you mean 'Relu'?)"),
    ({"name": 7}, "name: expected a string"),
    ({"name": "x", "pools": {"Conv": {}}}, "pools.Conv: unknown key"),
    ({"name": "x", "pools": {"MaxPool": {"count_include_pad": [1]}}}, "pools.MaxPool.count_include_pad: not a limit of MaxPool"),
    ({"name": "x", "pools": {"GlobalMaxPool": {"kernel": [1, 3]}}}, "pools.GlobalMaxPool.kernel: not a limit of GlobalMaxPool"),
    ({"name": "x", "pools": {"AveragePool": {"auto_pad": ["SAME"]}}}, "pools.AveragePool.auto_pad: 'SAME' is not one of"),
    ({"name": "x", "pools": {"AveragePool": {"count_include_pad": [2]}}}, "pools.AveragePool.count_include_pad: 2 is not allowed"),
    ({"name": "x", "pools": {"GlobalAveragePool": {"padded_kernel": [1, 8]}}}, "pools.GlobalAveragePool.padded_kernel: not a limit of GlobalAveragePool"),
    ({"name": "x", "pools": {"AveragePool": {"padded_stride": [4, 3]}}}, "pools.AveragePool.padded_stride: min 4 > max 3"),
    ({"name": "x", "pools": {"GlobalAveragePool": {"rewrite_even_if_native": {"source": "s"}}}}, "pools.GlobalAveragePool.rewrite_even_if_native.measured: required"),
    ({"name": "x", "pools": {"GlobalAveragePool": {"rewrite_even_if_native": {"source": "s", "measured": "m", "why": 1}}}}, "pools.GlobalAveragePool.rewrite_even_if_native.why: unknown key"),
    ({"name": "x", "pools": {"MaxPool": {"rewrite_even_if_native": True}}}, "pools.MaxPool.rewrite_even_if_native: expected an object"),
    ([1, 2], "expected an object"),
]


@pytest.mark.parametrize("content, message", BAD_PROFILES, ids=[m.split(":")[0] for _, m in BAD_PROFILES])
def test_a_bad_profile_is_exit_2_with_one_line_naming_file_and_key(tmp_path, capsys, content, message):
    (tmp_path / "bad.json").write_text(json.dumps(content))
    code, written, _ = run_cli(tmp_path, pools_model({"vgg": VGG}), "--target", str(tmp_path / "bad.json"))
    err = capsys.readouterr().err
    assert code == 2 and written is None
    assert err.count("\n") == 1 and f"{tmp_path / 'bad.json'}: {message}" in err, err


@pytest.mark.parametrize(
    "target, message",
    [
        ("jetson", "unknown target 'jetson': the built-in profiles are ethos-u, nvidia-dla, rknn, tflite, tidl"),
        ("missing.json", "missing.json: no such profile file"),
    ],
)
def test_an_unknown_target_is_exit_2_with_one_line(tmp_path, capsys, target, message):
    code, written, _ = run_cli(tmp_path, pools_model({"vgg": VGG}), "--target", target)
    err = capsys.readouterr().err
    assert code == 2 and written is None and err.count("\n") == 1 and message in err, err


def test_a_file_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / "t.json").write_text('{"name": "x",,}')
    with pytest.raises(ProfileError, match=r"t\.json: not JSON \(line 1, column 14"):
        load_profile(str(tmp_path / "t.json"))


# -- native pools ----------------------------------------------------------------


def spec_of(op_attrs: tuple[str, dict], spatial=(16, 16)):
    op, attrs = op_attrs
    return op, pool_spec_from_attributes("max" if op == "MaxPool" else "average", attrs, spatial)


@pytest.mark.parametrize(
    "profile, pool, reason",
    [
        ("rknn", ("MaxPool", dict(kernel_shape=[9, 9], pads=[4, 4, 4, 4])), "kernel 9 outside [1, 7]"),
        ("rknn", AVG_CIP0, "count_include_pad=0 not in [1]"),
        ("rknn", CEIL, "ceil_mode"),
        ("rknn", ("MaxPool", dict(kernel_shape=[3, 3], dilations=[2, 2])), "dilation"),
        ("nvidia-dla", ("MaxPool", dict(kernel_shape=[2, 2], strides=[17, 17])), "stride 17 outside [1, 16]"),
        ("tidl", VGG_S1, "window k2x2 s1x1 not in"),
        ("tidl", ("MaxPool", dict(kernel_shape=[3, 1], strides=[2, 2])), "kernel not square"),
    ],
)
def test_native_refusal_names_the_limit(profile, pool, reason):
    op, spec = spec_of(pool)
    assert reason in native_refusal(op, spec, load_profile(profile).pools[op])


@pytest.mark.parametrize("profile", WITH_MAXPOOL)
@pytest.mark.parametrize(
    "attrs, spatial, native_on",
    [
        # measured on rk3588 (rknn-toolkit2 2.5.0): both build as NPU layers
        (dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID"), (225, 30), {"rknn", "nvidia-dla", "tidl", "ethos-u"}),
        (dict(kernel_shape=[1, 2], strides=[1, 2], auto_pad="SAME_UPPER"), (8, 25), {"rknn", "nvidia-dla", "ethos-u"}),  # not square
        (dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"), (20, 20), {"rknn", "nvidia-dla", "tidl", "ethos-u"}),
        (dict(kernel_shape=[8, 8], auto_pad="SAME_UPPER"), (16, 16), {"nvidia-dla", "ethos-u"}),  # pads 3/4: kernel 8 > rknn's 7
    ],
)
def test_native_refusal_judges_auto_pad_on_the_resolved_pads(profile, attrs, spatial, native_on):
    spec = pool_spec_from_attributes("max", attrs, spatial)
    assert spec.auto_pad != "NOTSET"
    assert (native_refusal("MaxPool", spec, load_profile(profile).pools["MaxPool"]) is None) == (profile in native_on)


def test_a_profile_may_still_refuse_auto_pad_forms():
    # No built-in profile sets it (rknn's doc says "auto_pad: NOTSET", its compiler resolves
    # them: measured), but a user's target may: the same pool with explicit pads is native.
    limits = PoolLimits(kernel=Range(1, 7), auto_pad=("NOTSET",))
    same = pool_spec_from_attributes("max", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), (16, 16))
    explicit = pool_spec_from_attributes("max", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (16, 16))
    assert native_refusal("MaxPool", same, limits) == "auto_pad SAME_UPPER not in ['NOTSET']"
    assert native_refusal("MaxPool", explicit, limits) is None


def test_native_refusal_of_global_and_3d_pools():
    dla, tidl = load_profile("nvidia-dla"), load_profile("tidl")
    gap = "GlobalAveragePool"
    assert native_refusal(gap, global_pool_spec("average", (8, 8)), dla.pools[gap]) is None
    assert "extent 9 > global_max_extent 8" in native_refusal(gap, global_pool_spec("average", (9, 8)), dla.pools[gap])
    assert "area 1056 > global_max_area 1024" in native_refusal(gap, global_pool_spec("average", (32, 33)), tidl.pools[gap])
    assert native_refusal(gap, global_pool_spec("average", (32, 32)), tidl.pools[gap]) is None
    op, spec = spec_of(("MaxPool", dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2])), (8, 8, 8))
    assert "3-D" in native_refusal(op, spec, dla.pools["MaxPool"])


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_native_pools_stay_byte_identical_and_the_rest_is_not(tmp_path, name):
    case = CASES[name]
    model = pools_model({**case["native"], **case["rewritten"]})
    code, out, report = run_cli(tmp_path, model, "--target", name)
    assert code == 0 and report["validation"]["passed"] is True
    original = {n.name: n.SerializeToString() for n in model.graph.node}
    output = {n.name: n.SerializeToString() for n in out.graph.node}
    rows = {row["name"]: row for row in report["nodes"]}
    for pool in case["native"]:
        assert output[pool] == original[pool]
        assert rows[pool]["status"] == "kept" and rows[pool]["reason"] == f"runs natively on {name}"
        assert kept_by_request(rows[pool]["reason"])
    for pool in case["rewritten"]:
        # Rewritten, or kept because no construction fits the target (a reason naming it).
        row = rows[pool]
        assert row["status"] == "rewritten" or (name in row["reason"] and not kept_by_request(row["reason"])), row
        assert (pool in output) == (row["status"] == "kept")


@pytest.mark.parametrize("name, rewritten", [("nvidia-dla", "ceil"), ("rknn", "ceil"), ("tidl", None)])
def test_native_pools_do_not_fail_fail_on_kept(tmp_path, name, rewritten):
    pools = {**CASES[name]["native"], **({rewritten: CASES[name]["rewritten"][rewritten]} if rewritten else {})}
    code, out, report = run_cli(tmp_path, pools_model(pools), "--target", name, "--fail-on-kept")
    assert code == 0 and report["validation"]["passed"] is True
    assert [row["status"] for row in report["nodes"]].count("rewritten") == (1 if rewritten else 0)


def test_a_user_profile_file_keeps_its_native_pools(tmp_path):
    profile = {**USER_PROFILE, "ops": ["Conv", "Relu", "Add", "Concat"]}
    (tmp_path / "npu.json").write_text(json.dumps(profile))
    model = pools_model({"stem": STEM, "sppf5": SPPF5, "ceil": CEIL})
    code, out, report = run_cli(tmp_path, model, "--target", str(tmp_path / "npu.json"))
    assert code == 0 and report["validation"]["passed"] is True
    assert [n.SerializeToString() for n in out.graph.node if n.name == "stem"] == [model.graph.node[1].SerializeToString()]
    reasons = {row["name"]: row["reason"] for row in report["nodes"]}
    assert reasons["stem"] == "runs natively on my-npu"
    assert not any(kept_by_request(reasons[pool]) for pool in ("sppf5", "ceil"))


def test_the_api_takes_a_name_or_a_profile():
    model = pools_model({"vgg": VGG, "ceil": CEIL})
    for target in ("rknn", load_profile("rknn")):
        report = PoolRewritePass(target=target)(model).report
        assert [(n.name, n.status) for n in report.nodes] == [("vgg", "kept"), ("ceil", "rewritten")]
    with pytest.raises(ProfileError):
        PoolRewritePass(target="jetson")


def test_without_a_target_nothing_changes(tmp_path):
    model = pools_model({**CASES["rknn"]["native"], **CASES["tidl"]["native"]})
    code, out, report = run_cli(tmp_path, model)
    assert code == 0 and all(row["status"] == "rewritten" for row in report["nodes"])
    expected, _ = rewrite_model(model)
    assert [n.SerializeToString() for n in out.graph.node] == [n.SerializeToString() for n in expected.graph.node]
    assert PoolRewritePass(target=None)(model).model == PoolRewritePass()(model).model


def test_a_pool_kept_for_another_reason_still_fails_fail_on_kept(tmp_path, capsys):
    model = pools_model({"sppf5": SPPF5, "lp": ("LpPool", dict(kernel_shape=[3, 3], p=2))})
    code, out, report = run_cli(tmp_path, model, "--target", "rknn", "--fail-on-kept")
    assert code == 3 and out is None
    err = capsys.readouterr().err
    assert "1 pool node(s) kept" in err and "lp" in err and "sppf5" not in err


def test_the_allowed_ops_are_the_profiles_plus_allow():
    assert PoolRewritePass(target="rknn", allow=["Max"]).lowering(22).target.ops == {"Conv", "Relu", "Add", "Concat", "Max"}
    assert PoolRewritePass(target="nvidia-dla").lowering(22).target.can("Max")  # the lowering uses the profile's Max
    user = parse_profile(USER_PROFILE, "my-npu.json")
    assert PoolRewritePass(target=user).lowering(22).target.ops == {"Conv", "Relu", "Add"}
    assert PoolRewritePass(target=parse_profile({}, "bare.json")).lowering(22).target.ops == {"Conv", "Relu", "Add", "Concat"}
    assert PoolRewritePass().lowering(22).target.profile is None


def test_the_audit_passes_native_pools_and_names_the_native_limit_of_others(tmp_path):
    model = pools_model({"sppf5": SPPF5, "avg_cip0": AVG_CIP0, "lp": ("LpPool", dict(kernel_shape=[3, 3], p=2))})
    # The average would be rewritten to fit; left out, the audit names what rknn refuses.
    code, _, report = run_cli(tmp_path, model, "--target", "rknn", "--audit", "--no-validate", "--exclude", "avg_cip0")
    assert code == 0
    rows = {(row["node"], row["rule"]): row["value"] for row in report["audit"]["violations"]}
    assert not any(node == "sppf5" for node, _ in rows)
    assert rows[("avg_cip0", "pools.AveragePool")] == "count_include_pad=0 not in [1]"
    assert ("lp", "ops") in rows  # a pool op the profile does not run natively at all
