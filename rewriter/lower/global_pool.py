"""GlobalMaxPool and GlobalAveragePool: a pool whose window is the whole extent.

With static spatial dims they are exactly a MaxPool or AveragePool with
``kernel = extent``, so they reuse those lowerings through the same spec.
"""

from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from ..builder import SubgraphBuilder
from ..site import PoolSite
from ..spec import PoolSpec
from .checks import refuse_site, resolve_spec
from .average_pool import lower_average_pool
from .max_pool import lower_max_pool


def lower_global_pool(b: SubgraphBuilder, x: gs.Tensor, spec: PoolSpec, *, input_nonnegative: bool) -> gs.Tensor:
    """Build a global pool; ``spec`` comes from :func:`rewriter.spec.global_pool_spec`."""
    if spec.kind == "max":
        # A whole-extent window touches no padding, so non-negativity buys nothing.
        return lower_max_pool(b, x, spec, input_nonnegative=input_nonnegative)
    return lower_average_pool(b, x, spec)


class GlobalPoolRule:
    """GlobalMaxPool and GlobalAveragePool with static spatial dims."""

    op_types = ("GlobalMaxPool", "GlobalAveragePool")

    def check(self, site: PoolSite) -> Optional[str]:
        kind = "max" if site.op_type == "GlobalMaxPool" else "average"
        return refuse_site(site) or resolve_spec(site, kind)

    def rewrite(self, site: PoolSite, b: SubgraphBuilder, x: gs.Tensor) -> gs.Tensor:
        assert site.spec is not None
        return lower_global_pool(b, x, site.spec, input_nonnegative=site.input_nonnegative)
