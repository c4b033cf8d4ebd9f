"""Where the validator checks each pool node of a model, from what the pass knows.

A MaxPool of "same" MaxPools (SPPF) is lowered knowing its input is already a
max over a window: it is checked from its chain's start, where any input is
fair; a node whose input is provably >= 0 gets non-negative suites fed straight
in. :func:`pool_check_starts` gives the validator these facts for any model
(``rewriter`` installs it as the validator's default); for a rewrite the pass
records the same facts per node (``NodeResult.checked_from``).
"""

from __future__ import annotations

import onnx

from .ops import SITE_OPS, is_onnx_op
from .site import NonNegativity, max_window_source
from .validate import NodeCheckStart


def pool_check_starts(model: onnx.ModelProto) -> dict[str, NodeCheckStart]:
    """By output name, where the check of each pool node of the main graph starts."""
    nonnegative = NonNegativity.of_graphs([model.graph])
    starts = {}
    for node in model.graph.node:
        if is_onnx_op(node, SITE_OPS) and node.input and node.output:
            start = max_window_source(node.input[0], nonnegative.producer)
            starts[node.output[0]] = NodeCheckStart(start, nonnegative(start))
    return starts
