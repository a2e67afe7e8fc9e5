"""Arrays in, arrays out: data, networks, costs, the sorted input-cost gradient, batching.

The bottom layer of gflow_jax: it imports nothing else of the package (docs/theory.md holds
the mathematics every docstring cites).
"""

from ._adapted import (
    AdaptedParameters as AdaptedParameters,
    adapted_truncate as adapted_truncate,
    last_truncations as last_truncations,
)
from ._batching import (
    batch_mesh as batch_mesh,
    batched as batched,
    call_batched as call_batched,
    member_bytes as member_bytes,
    memory_batch_size as memory_batch_size,
    pad_batch as pad_batch,
    padded_batch_size as padded_batch_size,
    stack as stack,
)
from ._costs import (
    adapted_input_cost as adapted_input_cost,
    adapted_input_cost_gradient as adapted_input_cost_gradient,
    adapted_output_cost as adapted_output_cost,
    adapted_standard_cost as adapted_standard_cost,
    general_input_cost_gradient as general_input_cost_gradient,
    network_input_cost as network_input_cost,
    network_standard_cost as network_standard_cost,
    pulled_back_targets as pulled_back_targets,
)
from ._data import ClusteredData as ClusteredData, make_clusters as make_clusters
from ._datasets import (
    Dataset as Dataset,
    clusters_dataset as clusters_dataset,
    digits_dataset as digits_dataset,
    split_dataset as split_dataset,
)
from ._devices import (
    MEMORY_FRACTION as MEMORY_FRACTION,
    default_device as default_device,
    device_memory as device_memory,
    members_per_device as members_per_device,
    on_accelerator as on_accelerator,
    resolve_devices as resolve_devices,
    use_cpu_cores as use_cpu_cores,
)
from ._network import (
    ReLUNetwork as ReLUNetwork,
    cumulative_parameters as cumulative_parameters,
    input_space_forward as input_space_forward,
    random_orthogonal as random_orthogonal,
    relu_forward as relu_forward,
    truncation_map as truncation_map,
    truncation_projector as truncation_projector,
)
from ._sorted_field import (
    SortedData as SortedData,
    sort_data as sort_data,
    threshold_gradient as threshold_gradient,
)

__all__ = [
    "MEMORY_FRACTION",
    "AdaptedParameters",
    "ClusteredData",
    "Dataset",
    "ReLUNetwork",
    "SortedData",
    "adapted_input_cost",
    "adapted_input_cost_gradient",
    "adapted_output_cost",
    "adapted_standard_cost",
    "adapted_truncate",
    "batch_mesh",
    "batched",
    "call_batched",
    "clusters_dataset",
    "cumulative_parameters",
    "default_device",
    "device_memory",
    "digits_dataset",
    "general_input_cost_gradient",
    "input_space_forward",
    "last_truncations",
    "make_clusters",
    "member_bytes",
    "memory_batch_size",
    "members_per_device",
    "network_input_cost",
    "network_standard_cost",
    "on_accelerator",
    "pad_batch",
    "padded_batch_size",
    "pulled_back_targets",
    "random_orthogonal",
    "relu_forward",
    "resolve_devices",
    "sort_data",
    "split_dataset",
    "stack",
    "threshold_gradient",
    "truncation_map",
    "truncation_projector",
    "use_cpu_cores",
]
