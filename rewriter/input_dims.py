"""A model's graph inputs and their declared dims, as the user reads and writes
them (``NAME:D0,D1,...``): for ``--overwrite-input-shape`` and validation's messages.

A negative ``dim_value`` (Paddle writes -1) is dynamic.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import onnx

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def declared_dims(value: onnx.ValueInfoProto) -> Optional[list[Optional[int]]]:
    """An input's dims, None where dynamic (a dim_param, no value, or negative); None without a shape."""
    tt = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tt.shape.dim]


def dims_text(value: onnx.ValueInfoProto) -> str:
    """The declared shape as the user sees it, e.g. ``[N,3,?,?]``."""
    tt = value.type.tensor_type
    if not tt.HasField("shape"):
        return "[unknown rank]"
    return "[" + ",".join(
        str(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?") for d in tt.shape.dim
    ) + "]"


def suggested_dims(value: onnx.ValueInfoProto, given: Optional[Sequence[Optional[int]]] = None) -> str:
    """``D0,D1,...`` for an input: known values as numbers, a dynamic batch as 1,
    ``<name>`` placeholders for the rest (``<H>``, ``<W>`` for image layouts).

    ``given`` (optional, as resolved so far) overrides the declared dims.
    """
    dims = list(given) if given is not None else (declared_dims(value) or [])
    params = [d.dim_param for d in value.type.tensor_type.shape.dim]
    unknown = [axis for axis, d in enumerate(dims) if d is None and axis > 0]
    names = _placeholder_names(dims, params, unknown)
    parts = []
    for axis, d in enumerate(dims):
        parts.append(str(d) if d is not None else ("1" if axis == 0 else f"<{names[axis]}>"))
    return ",".join(parts)


def _placeholder_names(dims: Sequence[Optional[int]], params: Sequence[str], unknown: list[int]) -> dict[int, str]:
    """Image layouts get H and W; otherwise the model's own dim_param when it is a
    distinct name (one model calls both H and W ``?``), else ``d<axis>``."""
    if len(dims) == 4 and set(unknown) <= {2, 3} and dims[1] is not None:
        return {2: "H", 3: "W"}  # NCHW
    if len(dims) == 4 and set(unknown) <= {1, 2} and dims[3] is not None:
        return {1: "H", 2: "W"}  # NHWC
    if len(dims) == 3 and unknown == [2] and dims[1] is not None:
        return {2: "L"}  # NCL
    own = [params[a] if a < len(params) else "" for a in unknown]
    return {
        axis: param if _IDENTIFIER.match(param or "") and own.count(param) == 1 else f"d{axis}"
        for axis, param in zip(unknown, own)
    }


def graph_inputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """The main graph's inputs that need a value (initializers excluded), by name."""
    initializers = {t.name for t in model.graph.initializer}
    return {v.name: v for v in model.graph.input if v.name not in initializers}
