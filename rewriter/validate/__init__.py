"""Check a candidate model against its original on onnxruntime.

The parts, each replaceable on its own (the Polygraphy split):

* data loader (:mod:`.inputs`): :class:`InputSuite` objects say which inputs to
  feed; :func:`load_user_inputs` reads the user's own;
* runners (:mod:`.runners`): :class:`OrtRunner` executes one model (one session,
  built once), :class:`TrueConvolutionRunner` as a true-convolution backend would;
* comparator (:mod:`.comparator`): :class:`ToleranceComparator` says what "equal"
  means, relaxed by the network's own rounding noise (:mod:`.noise`);
* reference (:mod:`.reference`): :func:`record_reference` runs the original once,
  within the memory plan of :mod:`.memory`;
* localization (:mod:`.localize`): each pool node alone, from where its check starts;
* driver (:mod:`.driver`): :func:`compare_with_reference` and :func:`validate_models`,
  whose :class:`ValidationResult` (:mod:`.result`) the report shows.

Nothing here knows how a pool is lowered: where a node's check starts is given
(:class:`NodeCheckStart`), by the pass's report or by :func:`default_check_starts`.
"""

from .comparator import DEFAULT_RTOL, OutputComparison, ToleranceComparator
from .driver import compare_with_reference, validate_models
from .inputs import (
    ALL_NEGATIVE,
    DEFAULT_SUITES,
    SIGNED_NORMAL,
    TIE_HEAVY,
    WIDE_RANGE,
    InputDescription,
    InputSuite,
    ValidationSetupError,
    describe_inputs,
    load_user_inputs,
    make_feeds,
)
from .localize import CheckStarts, NodeCheck, NodeCheckStart, default_check_starts, own_inputs, set_default_check_starts
from .reference import ReferenceRun, record_reference
from .result import ValidationResult
from .runners import ORT_OPTIMIZATION, OrtRunner, TrueConvolutionRunner

__all__ = [
    "ALL_NEGATIVE",
    "CheckStarts",
    "DEFAULT_RTOL",
    "DEFAULT_SUITES",
    "InputDescription",
    "InputSuite",
    "NodeCheck",
    "NodeCheckStart",
    "ORT_OPTIMIZATION",
    "OrtRunner",
    "OutputComparison",
    "ReferenceRun",
    "SIGNED_NORMAL",
    "TIE_HEAVY",
    "ToleranceComparator",
    "TrueConvolutionRunner",
    "ValidationResult",
    "ValidationSetupError",
    "WIDE_RANGE",
    "compare_with_reference",
    "default_check_starts",
    "describe_inputs",
    "load_user_inputs",
    "make_feeds",
    "own_inputs",
    "record_reference",
    "set_default_check_starts",
    "validate_models",
]
