"""Loading target profiles: the built-in ones (JSON files of this package) and users' own.

:func:`load_profile` takes a built-in name (``ethos-u``, ``nvidia-dla``, ``rknn``, ``tflite``, ``tidl``)
or a path to a JSON file, validates it strictly against the format of
``docs/targets.md`` and returns a :class:`~rewriter.profile.Profile`. Anything
wrong (an unknown key, a wrong type, min > max, a negative value, a name that is
no ONNX op) raises :class:`ProfileError` with one line naming the file and the
key path, e.g. ``tidl.json: conv.kernel: expected [min, max] integers``: a typo
in a profile must not silently mean "no limit".
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from ..model_io import InputError
from ..ops import POOL_OPS
from ..profile import ConvLimits, CostRule, PoolLimits, Profile, Range
from ..selection import onnx_op_types, suggestion

BUILTIN_NAMES = ("ethos-u", "nvidia-dla", "rknn", "tflite", "tidl")
AUTO_PAD_VALUES = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
TOP_KEYS = ("name", "source", "ops", "conv", "concat_axes", "pools")
# Limits of global pools only (their window is the whole extent); the other pool limits,
# but for spatial_ranks, are of windowed pools only.
GLOBAL_ONLY_KEYS = ("global_max_extent", "global_max_area")


class ProfileError(InputError):
    """A profile that cannot be read or breaks the format; the message is one line."""


def load_profile(name_or_path: str) -> Profile:
    """The built-in profile ``name_or_path``, else the profile in that JSON file."""
    if name_or_path in BUILTIN_NAMES:
        label = f"{name_or_path}.json"
        text = resources.files(__name__).joinpath(label).read_text(encoding="utf-8")
    else:
        path = Path(name_or_path)
        label = str(path)
        if not path.is_file():
            if path.suffix or "/" in name_or_path or "\\" in name_or_path:
                raise ProfileError(f"{label}: no such profile file")
            raise ProfileError(
                f"unknown target '{name_or_path}': the built-in profiles are {', '.join(BUILTIN_NAMES)} (or give a FILE.json)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ProfileError(f"{label}: cannot read ({err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(f"{label}: not JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    return parse_profile(data, label)


def parse_profile(data: Any, label: str = "profile") -> Profile:
    """Validate a profile's decoded JSON; ``label`` (the file) starts every error line."""
    read = _Reader(label)
    top = read.object(data, "", TOP_KEYS)
    stem = Path(label).name.removesuffix(".json")
    return Profile(
        name=read.string(top["name"], "name") if "name" in top else stem,
        source=read.string(top["source"], "source") if "source" in top else "",
        ops=frozenset(read.ops(top["ops"], "ops")) if "ops" in top else None,
        conv=read.conv(top["conv"], "conv") if "conv" in top else ConvLimits(),
        concat_axes=read.ints(top["concat_axes"], "concat_axes", least=0) if "concat_axes" in top else None,
        pools={op: read.pool(limits, f"pools.{op}", op) for op, limits in read.object(top.get("pools", {}), "pools", tuple(sorted(POOL_OPS))).items()},
    )


def profile_dict(profile: Profile) -> dict:
    """The profile in its JSON form (what :func:`parse_profile` reads back to an equal profile)."""
    out: dict[str, Any] = {"name": profile.name, "source": profile.source}
    if profile.ops is not None:
        out["ops"] = sorted(profile.ops)
    conv = _limits_dict(profile.conv, ConvLimits())
    if conv:
        out["conv"] = conv
    if profile.concat_axes is not None:
        out["concat_axes"] = list(profile.concat_axes)
    if profile.pools:
        out["pools"] = {op: _limits_dict(limits, PoolLimits()) for op, limits in profile.pools.items()}
    return out


def _limits_dict(limits: object, defaults: object) -> dict:
    """The fields of a limits dataclass that differ from "no limit", in JSON form."""
    out = {}
    for key, value in vars(limits).items():
        if value == getattr(defaults, key):
            continue
        if isinstance(value, Range):
            value = [value.lo, value.hi]
        elif isinstance(value, CostRule):
            value = {"source": value.source, "measured": value.measured}
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[key] = value
    return out


class _Reader:
    """Typed reads of one profile's JSON; every failure is one line with the key path."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, path: str, message: str) -> ProfileError:
        return ProfileError(f"{self.label}: {path + ': ' if path else ''}{message}")

    def object(self, value: Any, path: str, keys: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, "expected an object")
        unknown = [key for key in value if key not in keys]
        if unknown:
            hint = suggestion(unknown[0], keys)
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self.fail(where, "unknown key" + (f" (did you mean '{hint}'?)" if hint else f"; known keys: {', '.join(keys)}"))
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "expected a string")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def integer(self, value: Any, path: str, least: int) -> int:
        if not _is_int(value):
            raise self.fail(path, "expected an integer")
        if value < least:
            raise self.fail(path, f"{value} is below {least}")
        return value

    def ints(self, value: Any, path: str, least: int, allowed: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            raise self.fail(path, "expected a list of integers")
        for v in value:
            if v < least or (allowed is not None and v not in allowed):
                raise self.fail(path, f"{v} is not allowed (" + (f"one of {list(allowed)}" if allowed else f"at least {least}") + ")")
        return tuple(value)

    def range(self, value: Any, path: str, least: int) -> Range:
        if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)):
            raise self.fail(path, "expected [min, max] integers")
        lo, hi = value
        if lo < least:
            raise self.fail(path, f"min {lo} is below {least}")
        if lo > hi:
            raise self.fail(path, f"min {lo} > max {hi}")
        return Range(lo, hi)

    def tuples(self, value: Any, path: str, size: int, shape: str) -> tuple[tuple[int, ...], ...]:
        """A list of ``size``-tuples of positive integers, e.g. ``[[3, 3, 1], ...]``."""
        ok = isinstance(value, list) and all(isinstance(t, list) and len(t) == size and all(_is_int(v) and v >= 1 for v in t) for t in value)
        if not ok:
            raise self.fail(path, f"expected a list of {shape}, positive integers")
        return tuple(tuple(t) for t in value)

    def strings(self, value: Any, path: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "expected a list of strings")
        for v in value:
            if v not in allowed:
                raise self.fail(path, f"'{v}' is not one of {', '.join(allowed)}")
        return tuple(value)

    def ops(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "expected a list of op type strings")
        known = onnx_op_types()
        for op in value:
            if op not in known:
                hint = suggestion(op, known)
                raise self.fail(path, f"'{op}' is no ONNX op type" + (f" (did you mean '{hint}'?)" if hint else " (op types are case-sensitive)"))
        return value

    def conv(self, value: Any, path: str) -> ConvLimits:
        fields: dict[str, Callable[[Any, str], Any]] = {
            "kernel": lambda v, p: self.range(v, p, 1),
            "stride": lambda v, p: self.range(v, p, 1),
            "dilation": lambda v, p: self.range(v, p, 1),
            "pad": lambda v, p: self.range(v, p, 0),
            "pad_below_kernel": self.boolean,
            "equal_strides": self.boolean,
            "dilation_only_at_stride_1": self.boolean,
            "depthwise_kernels": lambda v, p: self.tuples(v, p, 3, "[kh, kw, stride]"),
            "max_kernel_area": lambda v, p: self.integer(v, p, 1),
            "spatial_ranks": lambda v, p: self.ints(v, p, 1),
        }
        return ConvLimits(**self.fields(value, path, fields))

    def pool(self, value: Any, path: str, op: str) -> PoolLimits:
        fields: dict[str, Callable[[Any, str], Any]] = {
            "kernel": lambda v, p: self.range(v, p, 1),
            "stride": lambda v, p: self.range(v, p, 1),
            "pad": lambda v, p: self.range(v, p, 0),
            "ceil_mode": self.boolean,
            "dilation": self.boolean,
            "auto_pad": lambda v, p: self.strings(v, p, AUTO_PAD_VALUES),
            "count_include_pad": lambda v, p: self.ints(v, p, 0, allowed=(0, 1)),
            "square": self.boolean,
            "windows": lambda v, p: self.tuples(v, p, 2, "[kernel, stride]"),
            "global_max_extent": lambda v, p: self.integer(v, p, 1),
            "global_max_area": lambda v, p: self.integer(v, p, 1),
            "spatial_ranks": lambda v, p: self.ints(v, p, 1),
            "padded_kernel": lambda v, p: self.range(v, p, 1),
            "padded_stride": lambda v, p: self.range(v, p, 1),
            "rewrite_even_if_native": self.cost_rule,
        }
        if op.startswith("Global"):
            keys = (*GLOBAL_ONLY_KEYS, "spatial_ranks", "rewrite_even_if_native")
        else:
            keys = tuple(k for k in fields if k not in GLOBAL_ONLY_KEYS and (k != "count_include_pad" or op == "AveragePool"))
        if isinstance(value, dict):
            misplaced = [k for k in value if k in fields and k not in keys]
            if misplaced:
                raise self.fail(f"{path}.{misplaced[0]}", f"not a limit of {op} (its limits: {', '.join(keys)})")
        return PoolLimits(**self.fields(value, path, {k: fields[k] for k in keys}))

    def cost_rule(self, value: Any, path: str) -> CostRule:
        """``{"source": ..., "measured": ...}``: both required, both strings."""
        obj = self.object(value, path, ("source", "measured"))
        for key in ("source", "measured"):
            if key not in obj:
                raise self.fail(f"{path}.{key}", "required (where the measurement comes from, and what it measured)")
        return CostRule(self.string(obj["source"], f"{path}.source"), self.string(obj["measured"], f"{path}.measured"))

    def fields(self, value: Any, path: str, readers: dict[str, Callable[[Any, str], Any]]) -> dict:
        """Each key of the object ``value`` read by its reader; unknown keys refused."""
        obj = self.object(value, path, tuple(readers))
        return {key: readers[key](item, f"{path}.{key}") for key, item in obj.items()}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
