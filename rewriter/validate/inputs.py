"""Validation's data loader: the input suites, and the user's own inputs.

Inputs are signed and adversarial on purpose. Values in [0, 1) or all ones
cannot expose a zero-padded MaxPool; all-negative windows do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..input_dims import declared_dims, dims_text, graph_inputs, suggested_dims
from ..model_io import InputError, first_line
from . import memory


class ValidationSetupError(ValueError):
    """Validation could not start (for example an unresolved dynamic dimension)."""




# Suites fill an input a block of this many values at a time, so the temporaries
# of a suite's formula stay small however big the input is.
SUITE_BLOCK_VALUES = 1 << 20


@dataclass(frozen=True)
class InputSuite:
    """A named way to fill float inputs; integers and bools get their own values.

    ``make_float(rng, shape, dtype)`` returns the values of one block, of shape
    ``(n,)``, for an input of float ``dtype``; they must not depend on their
    position in the input. Compute them in :func:`suite_precision` ``(dtype)``."""

    name: str
    make_float: Callable[[np.random.Generator, tuple[int, ...], np.dtype], np.ndarray]

    def make(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An ``np.ndarray`` of ``shape`` and ``dtype`` (also for a scalar, shape ``()``),
        filled block by block in the input's own precision (no float64 copy of a float32 input)."""
        dtype = np.dtype(dtype)
        out = np.empty(shape, dtype)
        flat = out.reshape(-1)  # a view: ``out`` is fresh and contiguous
        for start in range(0, flat.size, SUITE_BLOCK_VALUES):
            count = min(SUITE_BLOCK_VALUES, flat.size - start)
            if dtype == np.bool_:
                flat[start : start + count] = rng.random(count, dtype=np.float32) < 0.5
            elif np.issubdtype(dtype, np.integer):
                flat[start : start + count] = rng.integers(0, 8, count)  # small non-negative: ids, indices, lengths
            else:
                flat[start : start + count] = self.make_float(rng, (count,), dtype)
        return out


def suite_precision(dtype: np.dtype) -> np.dtype:
    """The dtype suites compute in for an input of ``dtype``: float64 for float64, float32
    otherwise (numpy draws no float16; float32 rounds once more to float16 or bfloat16)."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _signed_normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.standard_normal(shape, dtype=suite_precision(dtype))


def _all_negative(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=suite_precision(dtype))
    np.abs(x, out=x)
    np.negative(x, out=x)
    x -= 0.25  # strictly negative: a zero pad would win every border window
    return x


def _tie_heavy(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.integers(-10, 11, shape).astype(suite_precision(dtype))


def _wide_range(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Signed magnitudes spread evenly over decades: ±10**e, e uniform in [-decades, decades)."""
    decades = 3 if dtype == np.float16 else 6  # float16 overflows past 65504
    work = suite_precision(dtype)
    v = rng.random(shape, dtype=work)
    v *= 2
    v -= 1  # uniform in [-1, 1): its sign and its magnitude are independent, one draw for both
    x = np.abs(v)
    x *= 2 * decades
    x -= decades
    np.power(work.type(10), x, out=x)
    return np.copysign(x, v, out=x)


SIGNED_NORMAL = InputSuite("signed-normal", _signed_normal)
ALL_NEGATIVE = InputSuite("all-negative", _all_negative)
TIE_HEAVY = InputSuite("tie-heavy-int", _tie_heavy)
WIDE_RANGE = InputSuite("wide-range", _wide_range)
DEFAULT_SUITES: tuple[InputSuite, ...] = (SIGNED_NORMAL, ALL_NEGATIVE, TIE_HEAVY, WIDE_RANGE)


@dataclass(frozen=True)
class InputDescription:
    """One graph input to fill: its name, static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def describe_inputs(model: onnx.ModelProto, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> list[InputDescription]:
    """Graph inputs that need a value, with static shapes.

    ``shapes`` fixes dynamic dims by input name; a ``-1`` in it keeps the
    model's dim. A dynamic batch (first) dimension defaults to 1; any other
    unresolved dimension is an error that suggests ``--overwrite-input-shape``.
    A negative ``dim_value`` (Paddle's -1) is dynamic.
    """
    shapes = dict(shapes or {})
    inputs = graph_inputs(model)
    unknown = set(shapes) - set(inputs)
    if unknown:
        raise ValidationSetupError(f"--input-shape names unknown input(s) {sorted(unknown)}; the inputs are {list(inputs)}")
    described = []
    for value in inputs.values():
        tt = value.type.tensor_type
        dims = declared_dims(value) or []
        if value.name in shapes:
            given = list(shapes[value.name])
            if len(given) != len(dims) or any(d is not None and g >= 0 and d != g for d, g in zip(dims, given)):
                raise ValidationSetupError(f"--input-shape {value.name}:{','.join(map(str, given))} does not fit its declared shape {dims_text(value)}")
            dims = [d if g < 0 else g for d, g in zip(dims, given)]  # -1: the model's own dim
        if dims and dims[0] is None:
            dims[0] = 1
        for axis, dim in enumerate(dims):
            if dim is None:
                label = tt.shape.dim[axis].dim_param or "?"
                example = f"{value.name}:{suggested_dims(value, dims)}"
                raise ValidationSetupError(
                    f"input '{value.name}' has dynamic dimension {axis} ('{label}'); fix it with --overwrite-input-shape "
                    f"{example} (your deployment's sizes; --input-shape {example} fixes it for validation only)"
                )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        described.append(InputDescription(value.name, tuple(int(d) for d in dims), dtype))
    return described


def make_feeds(inputs: Sequence[InputDescription], suite: InputSuite, seed: int = 0) -> dict[str, np.ndarray]:
    """One suite's values for ``inputs``, the same for the same seed (so a suite can be
    regenerated instead of kept). Raises :class:`ValidationSetupError` when they
    cannot fit in the memory available, before allocating them."""
    needed = sum(feed_bytes(i) for i in inputs)
    available = memory.available_memory_bytes()
    if available is not None and needed > available:
        raise ValidationSetupError(
            f"the {suite.name} inputs need {memory.gib(needed)} of memory, {memory.gib(available)} is available{smaller_shape_hint(inputs)}"
        )
    rng = np.random.default_rng(seed)
    return {i.name: suite.make(rng, i.shape, i.dtype) for i in inputs}


def feed_bytes(description: InputDescription) -> int:
    """Size of one generated input."""
    return int(np.prod(description.shape, dtype=np.int64)) * description.dtype.itemsize


def smaller_shape_hint(inputs: Sequence[InputDescription]) -> str:
    """A pointer to a smaller deployed shape for the biggest input, for memory refusals ("" without inputs)."""
    biggest = max(inputs, key=feed_bytes, default=None)
    if biggest is None:
        return ""
    dims = ",".join(f"D{i}" for i in range(len(biggest.shape)))
    now = "x".join(map(str, biggest.shape)) or "a scalar"
    return f"; {biggest.name} is {now} here: validate at a smaller deployed shape with --overwrite-input-shape {biggest.name}:{dims}"


def load_user_inputs(path: str | os.PathLike, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Read the user's inputs: a ``.npz`` (name -> array), a ``.npy`` (single-input
    models), a TensorProto ``.pb`` file, or a folder of ``input_*.pb`` files as in
    ONNX test data sets (``test_data_set_0/``). Unnamed tensors map to inputs in order.
    """
    p = Path(path)
    names = list(graph_inputs(model))
    try:
        if p.is_dir():
            files = sorted(p.glob("input_*.pb"), key=lambda f: int(f.stem.split("_")[-1]) if f.stem.split("_")[-1].isdigit() else 0)
            if not files:
                raise InputError(f"{p}: no input_*.pb files in this folder")
            tensors = [_read_tensor_pb(f) for f in files]
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return _check_user_inputs({k: data[k] for k in data.files}, names, p)
        elif p.suffix == ".npy":
            return _check_user_inputs({names[0]: np.load(p, allow_pickle=False)} if len(names) == 1 else {}, names, p)
        elif p.suffix == ".pb":
            tensors = [_read_tensor_pb(p)]
        else:
            raise InputError(f"{p}: inputs must be .npz, .npy, .pb or a folder of input_*.pb files")
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError(f"{p}: no such file") from err
    except Exception as err:
        raise InputError(f"{p}: cannot read inputs ({first_line(err)})") from err
    arrays = {}
    for index, (tensor_name, array) in enumerate(tensors):
        if tensor_name:
            arrays[tensor_name] = array
        elif index < len(names):
            arrays[names[index]] = array
    return _check_user_inputs(arrays, names, p)


def _read_tensor_pb(path: Path) -> tuple[str, np.ndarray]:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return tensor.name, numpy_helper.to_array(tensor)


def _check_user_inputs(arrays: dict[str, np.ndarray], names: list[str], path: Path) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in names]
    if missing or extra:
        raise InputError(f"{path}: inputs do not match the model: missing {missing}, unknown {extra}")
    return arrays

