"""Dynamics: gradient flows (diffrax), exact event-driven solutions, GD and SGD (optax), and
MLP training with trajectory recording.

One diffrax call (:func:`integrate_gradient_flow`), one solution type (:class:`FlowSolution`)
and its check, one minibatch sampler (:func:`minibatch_indices`), one descent loop
(:func:`descent_loop`) serve the effective flow, the full network and the MLPs.
"""

from ._descent import (
    DescentTrajectory as DescentTrajectory,
    descend as descend,
    descent_loop as descent_loop,
    gradient_descent as gradient_descent,
    steps_per_interval as steps_per_interval,
)
from ._effective import (
    closed_form_vector_field as closed_form_vector_field,
    solve_flow as solve_flow,
    vector_field as vector_field,
)
from ._exact import solve_exact as solve_exact
from ._face import (
    FaceSolution as FaceSolution,
    solve_face as solve_face,
    two_sided_width as two_sided_width,
)
from ._integrate import integrate_gradient_flow as integrate_gradient_flow
from ._located import solve_located as solve_located
from ._mlp import (
    MLP as MLP,
    evaluate as evaluate,
    flatten_params as flatten_params,
    init_mlp as init_mlp,
    loss_matrix as loss_matrix,
    make_optimizer as make_optimizer,
    per_example_loss as per_example_loss,
    unflatten_params as unflatten_params,
)
from ._mlp_training import (
    MemberOutcome as MemberOutcome,
    MemberRecorder as MemberRecorder,
    RecordingPlan as RecordingPlan,
    TrainingSpec as TrainingSpec,
    train_and_record as train_and_record,
)
from ._network_flow import (
    NetworkProblem as NetworkProblem,
    balance_quantities as balance_quantities,
    network_descent as network_descent,
    network_gradient as network_gradient,
    network_loss as network_loss,
    solve_network_flow as solve_network_flow,
)
from ._problem import FlowProblem as FlowProblem
from ._sampling import (
    floyd_ranks as floyd_ranks,
    minibatch_indices as minibatch_indices,
    positive_rows as positive_rows,
)
from ._settings import (
    DEFAULTS as DEFAULTS,
    SOLVERS as SOLVERS,
    SolverSettings as SolverSettings,
)
from ._solution import (
    FlowEvents as FlowEvents,
    FlowSolution as FlowSolution,
    SlidingStatus as SlidingStatus,
    check_solution as check_solution,
)

__all__ = [
    "DEFAULTS",
    "MLP",
    "SOLVERS",
    "DescentTrajectory",
    "FaceSolution",
    "FlowEvents",
    "FlowProblem",
    "FlowSolution",
    "MemberOutcome",
    "MemberRecorder",
    "NetworkProblem",
    "RecordingPlan",
    "SlidingStatus",
    "SolverSettings",
    "TrainingSpec",
    "balance_quantities",
    "check_solution",
    "closed_form_vector_field",
    "descend",
    "descent_loop",
    "evaluate",
    "flatten_params",
    "floyd_ranks",
    "gradient_descent",
    "init_mlp",
    "integrate_gradient_flow",
    "loss_matrix",
    "make_optimizer",
    "minibatch_indices",
    "network_descent",
    "network_gradient",
    "network_loss",
    "per_example_loss",
    "positive_rows",
    "solve_exact",
    "solve_face",
    "solve_flow",
    "solve_located",
    "solve_network_flow",
    "steps_per_interval",
    "train_and_record",
    "two_sided_width",
    "unflatten_params",
    "vector_field",
]
