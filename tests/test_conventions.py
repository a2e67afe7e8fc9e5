"""The conventions the literature uses, by name, against values computed by hand.

Papyan NC measures: the global mean (mean of the class means or of all features), ddof, NC3
squared or not, NC4 as agreement or mismatch; an unbalanced example small enough to do on
paper, a random one against a NumPy transcription of the paper's definitions, the named
conventions and how configs and runs record them. Kendall: τ-a and τ-b on tied data, carried
into the granulated Ψ and into every caller (docs/theory.md#neural-collapse,
#generalisation-statistics).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.core import ReLUNetwork, relu_forward
from gflow_jax.diagnostics import (
    CollapseConvention,
    collapse_convention,
    granulated_kendall,
    kendall_statistics,
    network_diagnostics,
    papyan_collapse,
)

# --------------------------------------------------------------------------------------------
# a hand-computed unbalanced example
#
# Q = 3 classes in the plane with 2, 1 and 1 points:
#   class 0: (−1, 0), (1, 0)   μ_0 = (0, 0)
#   class 1: (4, 0)            μ_1 = (4, 0)
#   class 2: (0, 4)            μ_2 = (0, 4)
# Global mean: of the class means (4/3, 4/3); of all features (1, 1).
# Centred means M̄: class means (4/3)·{(−1, −1), (2, −1), (−1, 2)}; features {(−1, −1),
# (3, −1), (−1, 3)}.
# Σ_W = (1/4)·2·diag(1, 0) = diag(1/2, 0).
# Σ_B = (1/3) Σ M̄ M̄ᵀ: class means (16/27)[[6, −3], [−3, 6]], inverse (1/16)[[6, 3], [3, 6]];
#   features (1/3)[[11, −5], [−5, 11]], inverse (1/32)[[11, 5], [5, 11]].
# NC1 = tr(Σ_W Σ_B⁻¹)/3: class means (1/2)(6/16)/3 = 1/16; features (1/2)(11/32)/3 = 11/192.
# Norms ‖M̄_c‖ have the form (a, b, b); their CV is √2|b − a|/(a + 2b) with ddof = 0 and
#   √3|b − a|/(a + 2b) with ddof = 1: class means a = √2, b = √5 (the factor 4/3 cancels);
#   features a = √2, b = √10. The classifier rows below have norms √2, √5, √5 as well.
# Cosines over the three pairs, also of the form (a, a, b): class means −1/√10, −1/√10, −0.8;
#   features −1/√5, −1/√5, −0.6. Their std: √2|b − a|/3 (ddof 0), |b − a|/√3 (ddof 1); the max
#   angle: mean |cos + 1/2|.
# Classifier W = rows (−1, −1), (2, −1), (−1, 2) ∝ M̄ of the class means: NC3 = 0 there. With the
#   features' M̄: ‖W/‖W‖ − M̄/‖M̄‖‖² = 2 − 2⟨W, M̄⟩/(‖W‖‖M̄‖) = 2 − 32/√(12·22).
# Bias b = (1/2, 0, 0): logits at (−1, 0) are (3/2, −2, 1) → 0 (nearest mean 0, agree); at
#   (1, 0) (−1/2, 2, −1) → 1 (nearest mean 0: disagree); (4, 0) → 1 and (0, 4) → 2 agree.
#   Agreement 3/4, mismatch 1/4.

H = jnp.array([[-1.0, 0.0], [1.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
LABELS = jnp.array([0, 0, 1, 2])
W = jnp.array([[-1.0, -1.0], [2.0, -1.0], [-1.0, 2.0]])
B = jnp.array([0.5, 0.0, 0.0])
R2, R3, R5, R10 = (math.sqrt(v) for v in (2, 3, 5, 10))


def _cv(a, b, ddof):
    return (R2 if ddof == 0 else R3) * abs(b - a) / (a + 2 * b)


def _angle_std(a, b, ddof):
    return R2 * abs(b - a) / 3 if ddof == 0 else abs(b - a) / R3


HAND = {
    "class_means": {
        "nc1": 1 / 16,
        "norms": (R2, R5),
        "cos": (-1 / R10, -0.8),
        "nc3_squared": 0.0,
    },
    "features": {
        "nc1": 11 / 192,
        "norms": (R2, R10),
        "cos": (-1 / R5, -0.6),
        "nc3_squared": 2 - 32 / math.sqrt(12 * 22),
    },
}


@pytest.mark.parametrize("global_mean", ["class_means", "features"])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("nc3", ["norm", "squared"])
@pytest.mark.parametrize("nc4", ["agreement", "mismatch"])
def test_unbalanced_example_by_hand(global_mean, ddof, nc3, nc4):
    nc = papyan_collapse(H, LABELS, 3, W, B, global_mean=global_mean, ddof=ddof, nc3=nc3, nc4=nc4)
    hand = HAND[global_mean]
    cos_a, cos_b = hand["cos"]
    expected = {
        "nc1": hand["nc1"],
        "nc2_equinorm": _cv(*hand["norms"], ddof),
        "nc2_equinorm_w": _cv(R2, R5, ddof),
        "nc2_equiangle": _angle_std(cos_a, cos_b, ddof),
        "nc2_maxangle": (2 * abs(cos_a + 0.5) + abs(cos_b + 0.5)) / 3,
        "nc3": hand["nc3_squared"] if nc3 == "squared" else math.sqrt(hand["nc3_squared"]),
        "nc4": 0.75 if nc4 == "agreement" else 0.25,
    }
    for name, value in expected.items():
        assert float(getattr(nc, name)) == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert nc.convention == CollapseConvention(global_mean, ddof, nc3, nc4)


def test_unbalanced_example_the_two_global_means_differ_as_stated_in_the_docs():
    """docs/theory.md quotes these two equinorm values for this example."""
    toolkit = papyan_collapse(H, LABELS, 3, W, B)
    papyan = papyan_collapse(H, LABELS, 3, W, B, global_mean="features")
    assert float(toolkit.nc2_equinorm) == pytest.approx(0.19745, abs=5e-6)
    assert float(papyan.nc2_equinorm) == pytest.approx(0.31945, abs=5e-6)


def test_named_conventions():
    assert collapse_convention("toolkit") == CollapseConvention(
        "class_means", 0, "norm", "agreement"
    )
    assert collapse_convention("papyan") == CollapseConvention("features", 1, "squared", "mismatch")
    assert collapse_convention("papyan", ddof=0).ddof == 0
    by_name = papyan_collapse(H, LABELS, 3, W, B, convention="papyan")
    by_options = papyan_collapse(
        H, LABELS, 3, W, B, global_mean="features", ddof=1, nc3="squared", nc4="mismatch"
    )
    for name in ("nc1", "nc2_equinorm", "nc2_equiangle", "nc3", "nc4"):
        assert float(getattr(by_name, name)) == float(getattr(by_options, name))
    default = papyan_collapse(H, LABELS, 3, W, B)
    assert default.convention == collapse_convention("toolkit")  # backward compatible


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"global_mean": "median"}, "papyan_collapse: global_mean must be one of"),
        ({"ddof": 2}, "papyan_collapse: ddof must be 0 or 1"),
        ({"nc3": "cubed"}, "papyan_collapse: nc3 must be one of"),
        ({"nc4": "accuracy"}, "papyan_collapse: nc4 must be one of"),
        ({"convention": "neurips"}, "papyan_collapse: convention must be one of"),
    ],
)
def test_unknown_options_are_one_line_errors_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        papyan_collapse(H, LABELS, 3, W, B, **kwargs)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# a random unbalanced case against the paper's definitions, written out in NumPy


def _paper(h, labels, Q, W, b, global_mean, ddof, nc3, nc4):
    """Papyan, Han and Donoho's measures as their code computes them, with the four options."""
    h, labels, W, b = map(np.asarray, (h, labels, W, b))
    N = h.shape[0]
    mu = np.stack([h[labels == c].mean(0) for c in range(Q)])
    mu_g = h.mean(0) if global_mean == "features" else mu.mean(0)
    Mbar = mu - mu_g
    Sw = sum(np.outer(h[i] - mu[labels[i]], h[i] - mu[labels[i]]) for i in range(N)) / N
    Sb = Mbar.T @ Mbar / Q
    norms = np.linalg.norm(Mbar, axis=1)
    unit = Mbar / norms[:, None]
    cos = np.array([unit[c] @ unit[d] for c in range(Q) for d in range(c + 1, Q)])
    wn = np.linalg.norm(W, axis=1)
    gap = np.linalg.norm(W / np.linalg.norm(W) - Mbar / np.linalg.norm(Mbar))
    near = np.argmin(((h[:, None] - mu[None]) ** 2).sum(-1), axis=1)
    agree = np.mean(near == np.argmax(h @ W.T + b, axis=1))
    return {
        "nc1": np.trace(Sw @ np.linalg.pinv(Sb)) / Q,
        "nc2_equinorm": norms.std(ddof=ddof) / norms.mean(),
        "nc2_equinorm_w": wn.std(ddof=ddof) / wn.mean(),
        "nc2_equiangle": cos.std(ddof=ddof),
        "nc2_maxangle": np.abs(cos + 1 / (Q - 1)).mean(),
        "nc3": gap**2 if nc3 == "squared" else gap,
        "nc4": agree if nc4 == "agreement" else 1 - agree,
    }


@pytest.mark.parametrize("convention", ["toolkit", "papyan"])
def test_random_unbalanced_case_against_the_definitions(convention):
    rng = np.random.default_rng(3)
    Q, M = 4, 5
    counts = [9, 3, 5, 2]
    labels = np.repeat(np.arange(Q), counts)
    centres = 2.0 * rng.normal(size=(Q, M))
    h = centres[labels] + 0.7 * rng.normal(size=(labels.size, M))
    W, b = rng.normal(size=(Q, M)), 0.3 * rng.normal(size=Q)
    conv = collapse_convention(convention)
    nc = papyan_collapse(
        jnp.asarray(h),
        jnp.asarray(labels),
        Q,
        jnp.asarray(W),
        jnp.asarray(b),
        convention=convention,
    )
    oracle = _paper(h, labels, Q, W, b, **conv.as_dict())
    for name, value in oracle.items():
        assert float(getattr(nc, name)) == pytest.approx(value, rel=1e-10), name
    assert 0.0 < oracle["nc4"] < 1.0


def test_balanced_classes_the_global_means_coincide():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 4)
    h = jnp.asarray(rng.normal(size=(3, 2))[labels] + 0.3 * rng.normal(size=(12, 2)))
    W, b = jnp.asarray(rng.normal(size=(3, 2))), jnp.zeros(3)
    labels = jnp.asarray(labels)
    a = papyan_collapse(h, labels, 3, W, b)
    f = papyan_collapse(h, labels, 3, W, b, global_mean="features")
    m = papyan_collapse(h, labels, 3, W, b, nc4="mismatch")
    for name in ("nc1", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc3"):
        assert float(getattr(a, name)) == pytest.approx(float(getattr(f, name)), rel=1e-12)
    assert float(a.nc4) + float(m.nc4) == pytest.approx(1.0)


def test_two_classes_sample_std_of_one_angle_is_undefined():
    h = jnp.array([[0.0, 0.0], [0.2, 0.0], [3.0, 1.0], [3.0, 1.2]])
    labels = jnp.array([0, 0, 1, 1])
    W, b = jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.zeros(2)
    assert float(papyan_collapse(h, labels, 2, W, b).nc2_equiangle) == 0.0
    assert math.isnan(float(papyan_collapse(h, labels, 2, W, b, ddof=1).nc2_equiangle))


def _trajectory():
    """Two saved networks (L = 2, M = 4, Q = 2) and unbalanced data, built in NumPy."""
    rng = np.random.default_rng(0)
    leaves = [np.eye(4)[None] + 0.4 * rng.normal(size=(2, 4, 4)), 0.3 * rng.normal(size=(2, 4)),
              rng.normal(size=(2, 4)), rng.normal(size=2)]  # fmt: skip
    net = ReLUNetwork(*map(jnp.asarray, leaves))
    nets = jax.tree.map(lambda a: jnp.asarray(np.stack([a, 1.2 * a])), net)  # saves 0 and 1
    x = jnp.asarray(rng.normal(size=(7, 4)))
    return nets, x, jnp.array([0, 0, 0, 0, 0, 1, 1])


def test_network_diagnostics_passes_the_convention_on():
    """Traced only (nothing compiles): the result records the convention asked for."""
    nets, x, labels = _trajectory()
    shapes = eqx.filter_eval_shape(network_diagnostics, nets, x, labels, 2, collapse="papyan")
    assert shapes.papyan.convention == collapse_convention("papyan")
    assert shapes.papyan.nc1.shape == (2,)


@pytest.mark.slow
def test_network_diagnostics_computes_the_convention_asked_for():
    """The saved networks of a trajectory (two here) get the measures of the convention asked
    for, equal to papyan_collapse on each network's last-layer features."""
    nets, x, labels = _trajectory()
    diag = network_diagnostics(nets, x, labels, 2, collapse="papyan")
    assert diag.papyan.convention == collapse_convention("papyan")
    for t in range(2):
        one = jax.tree.map(lambda a, t=t: a[t], nets)
        features = jax.vmap(lambda xi, one=one: relu_forward(one, xi)[0][-1])(x)
        direct = papyan_collapse(
            features, labels, 2, one.out_weight, one.out_bias, convention="papyan"
        )
        for name in ("nc1", "nc2_equinorm", "nc3", "nc4"):
            assert float(getattr(diag.papyan, name)[t]) == pytest.approx(
                float(getattr(direct, name)), rel=1e-10, nan_ok=True
            ), name


# --------------------------------------------------------------------------------------------
# configs and run records


def test_collapse_config_resolves_and_records_every_option():
    from gflow_jax.experiments import config_snapshot, load_experiment

    kind, cfg = load_experiment("experiments/sgd_vs_flow.toml")
    assert cfg.collapse.options() == collapse_convention("toolkit")
    snapshot = config_snapshot(kind, cfg)["collapse"]
    assert snapshot == {
        "convention": "toolkit",
        "global_mean": "class_means",
        "ddof": 0,
        "nc3": "norm",
        "nc4": "agreement",
    }
    _, cfg = load_experiment(
        "experiments/sgd_vs_flow.toml", ["collapse.convention=papyan", "collapse.nc4=agreement"]
    )
    assert cfg.collapse.options() == CollapseConvention("features", 1, "squared", "agreement")
    # the recorded config reloads to the same options
    again = cfg.collapse.resolved()
    assert again == cfg.collapse and again.options() == cfg.collapse.options()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("collapse.convention=paper", "collapse.convention"),
        ("collapse.global_mean=median", "collapse.global_mean"),
        ("collapse.ddof=2", "collapse.ddof"),
        ("collapse.nc3=cubed", "collapse.nc3"),
        ("collapse.nc4=accuracy", "collapse.nc4"),
        ("collapse.normalise=true", "collapse.normalise"),
    ],
)
def test_bad_collapse_config_is_one_line_naming_the_key(override, key):
    from gflow_jax.experiments import ConfigError, load_experiment

    with pytest.raises(ConfigError) as info:
        load_experiment("experiments/sgd_vs_flow.toml", [override])
    assert info.value.key == key
    assert str(info.value).startswith(f"config key '{key}'") and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Kendall τ-a and τ-b on tied data, into Ψ and every caller
#
# Six networks on a 3 × 2 grid (lr × bs), one seed; measure m and gap g with ties:
#   lr  1  2  3  1  2  3
#   bs  8  8  8 16 16 16
#   m   1  1  2  1  2  3
#   g   1  2  3  2  2  3
# ψ_lr, groups of equal bs (τ across lr):
#   bs = 8:  pairs (1,2): m tied; (1,3), (2,3): concordant. S = 2, n0 = 3, n1 = 1, n2 = 0:
#            τ_a = 2/3, τ_b = 2/√(2·3) = 2/√6.
#   bs = 16: (4,5): g tied; (4,6), (5,6) concordant: τ_a = 2/3, τ_b = 2/√6.
# ψ_bs, groups of equal lr (two networks each): lr = 1 has m tied, lr = 2 and 3 have g tied:
#   τ_a = 0 in each, τ_b undefined in each (a constant variable) → ψ_bs^a = 0, ψ_bs^b = NaN.
# Ψ_a = (2/3 + 0)/2 = 1/3; Ψ_b = the mean of the defined ψ = 2/√6 ≈ 0.816.
# Over all six: 15 pairs; 8 concordant, none discordant; tied in m: the pairs among networks
#   1, 2, 4 (m = 1) and 3, 5 (m = 2), 4 pairs; tied in g: among 2, 4, 5 (g = 2) and 3, 6
#   (g = 3), 4 pairs. τ_a = 8/15, τ_b = 8/√((15 − 4)(15 − 4)) = 8/11.

LR = [1, 2, 3, 1, 2, 3]
BS = [8, 8, 8, 16, 16, 16]
MEAS = [1, 1, 2, 1, 2, 3]
GAP = [1, 2, 3, 2, 2, 3]
FACTORS = {"lr": LR, "bs": BS, "seed": [0] * 6}


def test_tied_granulated_kendall_by_hand():
    a = granulated_kendall(MEAS, GAP, FACTORS, variant="a")
    b = granulated_kendall(MEAS, GAP, FACTORS, variant="b")
    assert a.psi["lr"] == pytest.approx(2 / 3, abs=1e-15)
    assert a.psi["bs"] == pytest.approx(0.0, abs=1e-15)
    assert a.Psi == pytest.approx(1 / 3, abs=1e-15)
    assert b.psi["lr"] == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    assert math.isnan(b.psi["bs"]) and b.n_groups["bs"] == 0
    assert b.Psi == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    assert (a.variant, b.variant) == ("a", "b")


def test_tied_tau_by_hand_and_the_statistics_carry_the_variant():
    # all 15 pairs of the six networks, sign(m_i − m_j)·sign(g_i − g_j):
    S = sum(
        np.sign(MEAS[i] - MEAS[j]) * np.sign(GAP[i] - GAP[j])
        for i in range(6)
        for j in range(i + 1, 6)
    )
    ties_m = sum(MEAS[i] == MEAS[j] for i in range(6) for j in range(i + 1, 6))
    ties_g = sum(GAP[i] == GAP[j] for i in range(6) for j in range(i + 1, 6))
    assert (S, ties_m, ties_g) == (8, 4, 4)  # as counted by hand in the comment above
    for variant, tau, Psi in (("a", 8 / 15, 1 / 3), ("b", 8 / 11, 2 / math.sqrt(6))):
        st = kendall_statistics(MEAS, GAP, FACTORS, variant=variant, n_bootstrap=0)
        assert st.variant == variant
        assert st.tau.value == pytest.approx(tau, abs=1e-15)
        assert st.Psi.value == pytest.approx(Psi, abs=1e-15)


def test_generalisation_table_and_config_honour_the_variant():
    from gflow_jax.experiments import ConfigError, load_experiment
    from gflow_jax.experiments.magnitude_generalization._table import correlation_table

    results = [
        {
            "status": "ok",
            "lr": lr,
            "batch_size": bs,
            "seed": 0,
            "measures": {"m": m},
            "acc_gap": g,
            "loss_gap": g,
        }
        for lr, bs, m, g in zip(LR, BS, MEAS, GAP, strict=True)
    ]
    for variant, Psi in (("a", 1 / 3), ("b", 2 / math.sqrt(6))):
        _, cfg = load_experiment(
            "experiments/magnitude_generalization_small.toml",
            [f"statistics.kendall_variant={variant}", "statistics.n_bootstrap=0"],
        )
        assert cfg.statistics.kendall_variant == variant
        rows, _ = correlation_table(results, cfg.statistics)
        row = next(r for r in rows if r["measure"] == "m")
        assert row["Psi[acc_gap]"] == pytest.approx(Psi, abs=1e-15)
    with pytest.raises(ConfigError) as info:
        load_experiment(
            "experiments/magnitude_generalization_small.toml", ["statistics.kendall_variant=c"]
        )
    assert info.value.key == "statistics.kendall_variant"
