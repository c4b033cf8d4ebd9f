"""What the target can run: the one place the lowering asks.

A :class:`Target` holds the op set (the strict Conv/Relu/Add/Concat plus what
``--allow`` adds), the opset the subgraph is written at, the first opset
version at which onnxruntime (the validator) implements each emitted op, Pad's
modes, the dtype rules, and the target profile (``--target``: the limits on
what the emitted Convs and Concats may look like, and the pools the target runs
itself; :mod:`rewriter.profile`). The builder refuses what the target cannot run, every
MaxPool strategy asks it before planning, and the pass checks a planned
subgraph against it once (:meth:`Target.refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from .profile import ConvLimits, Profile, native_refusal
from .spec import PoolSpec

STRICT_OPS = frozenset({"Conv", "Relu", "Add", "Concat"})
# Ops a profile may add, each used by some lowering when allowed: the one list of
# them (``can`` refuses any other, and ``--allow`` names them in its errors). Reshape:
# a reduction acting as a global pool whose output rank differs from its input's.
PROFILE_OPS = frozenset({"Max", "Pad", "Mul", "Div", "Reshape"})
# What a quantized (QDQ) region's lowering adds: emitted only by a builder in quantized
# mode (:meth:`rewriter.builder.SubgraphBuilder.quantized`), for a pool that already sits
# between the model's DequantizeLinear and QuantizeLinear; never by a float lowering.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# The first opset version at which onnxruntime implements each op we may emit.
ORT_FIRST_VERSION = {"Conv": 1, "Pad": 2, "Concat": 4, "Relu": 6, "Max": 6, "Add": 7, "Mul": 7, "Div": 7, "Reshape": 5, "QuantizeLinear": 10, "DequantizeLinear": 10}
# Pools onnxruntime cannot run at every opset: the original could not be compared.
ORT_POOL_FIRST_VERSION = {"AveragePool": 7}
# Pad's modes the lowering uses, and the first opset that spells them as it does
# (Pad-1 names its pads "paddings").
PAD_MODES = {"edge": 2}

SUPPORTED_DTYPES = ("float32", "float16")
DTYPE_REASONS = {
    "int8": "int8 pool: the strict op set has no exact integer max/average path",
    "uint8": "uint8 pool: the strict op set has no exact integer max/average path",
    "float64": "double pool: onnxruntime has no double Conv, so the rewrite could not be validated "
    "(--rewrite-double with --no-validate rewrites it anyway)",
    "bfloat16": "bfloat16 pool: onnxruntime has no bfloat16 Conv on CPU, so the rewrite could not be validated",
}


@dataclass(frozen=True)
class Target:
    """The ops, opset, dtypes and limits a replacement subgraph must keep to.

    ``profile`` None: no limits beyond the op set (today's strict output).
    """

    allowed: frozenset[str] = STRICT_OPS
    opset: int = 22
    allow_double: bool = False  # float64 pools, for a user who gave up validation
    profile: Optional[Profile] = None

    @classmethod
    def of(cls, allow: Iterable[str] = (), opset: int = 22, profile: Optional[Profile] = None, **options) -> "Target":
        """The strict op set, the profile's ops and ``allow``, at ``opset``. The lowering may
        emit any of them; what the output may hold is :attr:`ops` (checked by the fit)."""
        extras = profile.ops if profile is not None and profile.ops is not None else frozenset()
        return cls(allowed=STRICT_OPS | extras | frozenset(allow), opset=opset, profile=profile, **options)

    @property
    def conv_limits(self) -> ConvLimits:
        """What an emitted Conv may look like (no limit without a profile)."""
        return self.profile.conv if self.profile is not None else ConvLimits()

    @property
    def concat_axes(self) -> Optional[tuple[int, ...]]:
        """The axes a Concat may join on, NCHW numbering; None: any."""
        return self.profile.concat_axes if self.profile is not None else None

    @property
    def ops(self) -> frozenset[str]:
        """The ops an output node may have: the profile's (the strict set if it names
        none), plus what ``--allow`` added."""
        base = self.profile.ops if self.profile is not None and self.profile.ops is not None else STRICT_OPS
        return base | (self.allowed - STRICT_OPS)

    def can(self, op: str) -> bool:
        """Whether ``op`` may be emitted: allowed, and runnable at this opset."""
        if op not in PROFILE_OPS | STRICT_OPS:
            raise ValueError(f"{op} is not in PROFILE_OPS: list it there, so that --allow knows it")
        return op in self.allowed and not (op == "Pad" and self.opset < PAD_MODES["edge"])

    def native_pool_refusal(self, op_type: str, spec: PoolSpec) -> Optional[str]:
        """Why a pool node ``op_type`` with exactly ``spec`` may not be emitted, or None: the
        only pools a lowering emits are those the profile runs natively (its ``pools``)."""
        limits = self.profile.pools.get(op_type) if self.profile is not None else None
        if limits is None:
            return f"{op_type} is not run natively on {self.profile.name if self.profile else 'the strict op set'}"
        return native_refusal(op_type, spec, limits)

    def dtype_refusal(self, dtype_name: str) -> Optional[str]:
        """Why a pool of this dtype is kept, or None."""
        if dtype_name in SUPPORTED_DTYPES or (dtype_name == "float64" and self.allow_double):
            return None
        return DTYPE_REASONS.get(dtype_name, f"{dtype_name or 'unknown'} dtype: only float32 and float16 are rewritten")

    def pool_refusal(self, op_type: str) -> Optional[str]:
        """Why a pool of ``op_type`` at this opset is kept before anything is planned, or None."""
        if self.opset < ORT_POOL_FIRST_VERSION.get(op_type, 1):
            return f"{op_type}-1: onnxruntime has no kernel for it, so the rewrite could not be validated"
        return None

    def too_old(self, ops: Iterable[str]) -> list[str]:
        """The ops onnxruntime has no kernel for at this opset, sorted."""
        return sorted(op for op in set(ops) if self.opset < ORT_FIRST_VERSION.get(op, 1))

    def refusal(self, ops: Iterable[str]) -> Optional[str]:
        """Why a subgraph made of ``ops`` cannot be used at this opset, or None."""
        old = self.too_old(ops)
        if not old:
            return None
        return (
            f"opset {self.opset}: onnxruntime has no kernel for {', '.join(old)} at this version, "
            "so the rewrite could not be validated (convert the model to opset 7 or later)"
        )
