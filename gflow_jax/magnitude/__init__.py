"""Magnitude of finite metric spaces (docs/theory.md#magnitude): distances, the jit/vmap core,
the adaptive CPU engine, the many-clouds engine and the public functions.

Scale convention everywhere: Z(t)_ij = exp(−t·d(x_i, x_j)), t > 0 in inverse units of the
distances; Z is built per scale as exp(−t·D). Duplicates are merged and reported, never
perturbed; every scale reports its solver, a condition estimate and its residual.
"""

from ._adaptive import AdaptiveSettings as AdaptiveSettings, solve_adaptive as solve_adaptive
from ._api import (
    SCALE_CONVENTION as SCALE_CONVENTION,
    MagnitudeFunction as MagnitudeFunction,
    magnitude as magnitude,
    magnitude_dimension_profile as magnitude_dimension_profile,
    magnitude_function as magnitude_function,
    magnitude_weights as magnitude_weights,
    positive_magnitude as positive_magnitude,
    spread as spread,
)
from ._clouds import (
    CloudMagnitudes as CloudMagnitudes,
    bucket_size as bucket_size,
    cloud_magnitudes as cloud_magnitudes,
    euclidean_distances as euclidean_distances,
    magnitude_scales as magnitude_scales,
)
from ._core import (
    SOLVER_NAMES as SOLVER_NAMES,
    MagnitudeResult as MagnitudeResult,
    duplicate_groups as duplicate_groups,
    magnitude_from_distances as magnitude_from_distances,
)
from ._dimension import (
    MagnitudeDimension as MagnitudeDimension,
    convergence_scale as convergence_scale,
    e_alpha as e_alpha,
    magnitude_dimension as magnitude_dimension,
)
from ._distances import (
    canonical_metric as canonical_metric,
    check_distance_matrix as check_distance_matrix,
    distance_matrix as distance_matrix,
    pairwise_distances as pairwise_distances,
)

__all__ = [
    "SCALE_CONVENTION",
    "SOLVER_NAMES",
    "AdaptiveSettings",
    "CloudMagnitudes",
    "MagnitudeDimension",
    "MagnitudeFunction",
    "MagnitudeResult",
    "bucket_size",
    "canonical_metric",
    "check_distance_matrix",
    "cloud_magnitudes",
    "convergence_scale",
    "distance_matrix",
    "duplicate_groups",
    "e_alpha",
    "euclidean_distances",
    "magnitude",
    "magnitude_dimension",
    "magnitude_dimension_profile",
    "magnitude_from_distances",
    "magnitude_function",
    "magnitude_scales",
    "magnitude_weights",
    "pairwise_distances",
    "positive_magnitude",
    "solve_adaptive",
    "spread",
]
