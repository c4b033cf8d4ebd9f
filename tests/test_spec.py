"""Our reading of the pool attributes (PoolSpec) against onnxruntime itself.

A numpy reference computes each pool window by window from the spec alone;
on a seeded random sample of attribute combinations across opsets, its
output shape and values must equal onnxruntime's.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import pool_model, run
from reference import reference_pool

from rewriter.spec import InvalidPoolError, SpecError, attribute_support, pool_spec_from_attributes
from compat import opsets


def random_case(rng: random.Random):
    op = rng.choice(["MaxPool", "AveragePool"])
    opset = rng.choice(opsets(7, 10, 11, 19, 22) if op == "AveragePool" else opsets(8, 10, 12, 22))
    rank = rng.choice([1, 2, 3])
    shape = [1, 2] + [rng.randint(1, 8) for _ in range(rank)]
    kernel = [rng.randint(1, 4) for _ in range(rank)]
    attrs: dict = {"kernel_shape": kernel, "strides": [rng.randint(1, 3) for _ in range(rank)]}
    support = attribute_support(op, opset)
    if support["dilations_supported"] and rng.random() < 0.4:
        attrs["dilations"] = [rng.randint(1, 3) for _ in range(rank)]
    auto_pad = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [rng.randint(0, k - 1) for k in kernel] * 2
        attrs["pads"][rank:] = [rng.randint(0, k - 1) for k in kernel]
    if support["ceil_mode_supported"] and rng.random() < 0.5:
        attrs["ceil_mode"] = 1
    if op == "AveragePool" and rng.random() < 0.5:
        attrs["count_include_pad"] = 1
    return op, opset, shape, attrs


CASES = [random_case(random.Random(seed)) for seed in range(250)]


@pytest.mark.parametrize("op,opset,shape,attrs", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_spec_matches_onnxruntime(op, opset, shape, attrs):
    kind = "max" if op == "MaxPool" else "average"
    try:
        spec = pool_spec_from_attributes(kind, attrs, shape[2:], **attribute_support(op, opset))
    except SpecError as err:
        pytest.skip(f"refused by design: {err}")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = run(pool_model(op, shape, attrs, opset=opset), {"x": x})[0]
    actual = reference_pool(x, spec)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_ceil_mode_drops_window_starting_in_end_padding():
    spec = pool_spec_from_attributes("average", dict(kernel_shape=[2], strides=[2], pads=[1, 1], ceil_mode=1), [5])
    assert spec.axes[0].out_size == 3  # not the 4 that shape inference before opset 22 claims


def test_count_include_pad_divisor_excludes_ceil_overhang():
    spec = pool_spec_from_attributes("average", dict(kernel_shape=[2], strides=[2], ceil_mode=1, count_include_pad=1), [5])
    assert spec.divisors(0) == [2, 2, 1]


@pytest.mark.parametrize(
    "attrs,reason",
    [
        (dict(kernel_shape=[2], auto_pad="SAME_UPPER", dilations=[2]), "dilations"),
        (dict(kernel_shape=[2], dilations=[2], pads=[2, 0]), "not smaller than kernel_shape"),
        (dict(kernel_shape=[1], strides=[4], auto_pad="SAME_LOWER"), "negative padding"),
    ],
)
def test_refusals_have_reasons(attrs, reason):
    with pytest.raises(SpecError, match=reason) as caught:
        pool_spec_from_attributes("max", attrs, [7])
    assert not isinstance(caught.value, InvalidPoolError)


@pytest.mark.parametrize(
    "attrs,reason",
    [
        (dict(kernel_shape=[2], pads=[2, 0]), "effective kernel"),
        (dict(kernel_shape=[0]), "non-positive"),
        (dict(kernel_shape=[2, 2]), "does not match"),
        (dict(kernel_shape=[2], strides=[0]), "must be positive"),
        (dict(kernel_shape=[2], pads=[1]), "do not match the kernel rank"),
        (dict(kernel_shape=[2], auto_pad="SAME"), "unknown auto_pad"),
    ],
)
def test_invalid_attributes(attrs, reason):
    with pytest.raises(InvalidPoolError, match=reason):
        pool_spec_from_attributes("max", attrs, [7])
