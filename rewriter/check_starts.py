"""Where the validator checks each pool node of a model, from what the pass knows.

A MaxPool of "same" MaxPools (SPPF) is lowered knowing its input is already a
max over a window: it is checked from its chain's start, where any input is
fair; a chain of reductions acting as one global pool is checked from its first
node's input; a node whose input is provably >= 0 gets non-negative suites fed
straight in. :func:`pool_check_starts` gives the validator these facts for any model
(``rewriter`` installs it as the validator's default); for a rewrite the pass
records the same facts per node (``NodeResult.checked_from``).
"""

from __future__ import annotations

import onnx

from .ops import SITE_OPS, is_onnx_op
from .reductions import pooling_reductions
from .site import NonNegativity, max_window_source
from .validate import NodeCheckStart


def pool_check_starts(model: onnx.ModelProto) -> dict[str, NodeCheckStart]:
    """By output name, where the check of each pool node of the main graph starts."""
    nonnegative = NonNegativity.of_graphs([model.graph])
    reductions = pooling_reductions(model)
    starts = {}
    for node in model.graph.node:
        if is_onnx_op(node, SITE_OPS) and node.input and node.output:
            chain = reductions.get(node.output[0])
            start = chain.start if chain is not None else max_window_source(node.input[0], nonnegative.producer)
            starts[node.output[0]] = NodeCheckStart(start, nonnegative(start))
    return starts
