"""onnx-poolrewrite: lower ONNX pooling ops to exact Conv/Relu/Add/Concat subgraphs.

The Python API:

* :func:`rewrite_model` / :class:`PoolRewritePass` rewrite a model (or, with
  :meth:`PoolRewritePass.run_graph`, an onnx-graphsurgeon Graph);
* :func:`validate_models` compares a candidate with its original on onnxruntime;
  :func:`rewrite_validated` rewrites, validates, and keeps a rewrite validation refuses
  (one the pass could not prove exact), as the CLI does;
* :func:`overwrite_input_shapes` gives a model's inputs static dims first;
* :func:`load_profile` reads a target profile (``PoolRewritePass(target=...)``).
"""

from .check_starts import pool_check_starts
from .passes import PoolRewritePass, RewriteResult, rewrite_model
from .profile import Profile
from .profiles import ProfileError, load_profile
from .refusals import rewrite_validated
from .report import NodeResult, Report
from .shapes import overwrite_input_shapes
from .spec import AxisSpec, PoolSpec, SpecError, pool_spec_from_attributes
from .validate import set_default_check_starts

# The validator knows no lowering: it checks each node from where the pass's analysis says.
set_default_check_starts(pool_check_starts)

__all__ = [
    "AxisSpec",
    "NodeResult",
    "PoolRewritePass",
    "PoolSpec",
    "Profile",
    "ProfileError",
    "Report",
    "RewriteResult",
    "SpecError",
    "load_profile",
    "overwrite_input_shapes",
    "pool_spec_from_attributes",
    "rewrite_model",
    "rewrite_validated",
]
__version__ = "0.1.0"
