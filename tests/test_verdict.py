"""The verdict format: criteria, intervals and the run's multiple-testing policy."""

import math

import numpy as np
import pytest

from sgdlab.experiments import exit_status, finalize, holm, quantity, summary_table


def test_each_criterion_uses_its_interval():
    eq = quantity("a", {}, 1.0, 0.1, 1.39)
    assert eq["criterion"] == "equal" and eq["pass"] is True
    assert (eq["lo"], eq["hi"]) == pytest.approx((0.6, 1.4))
    assert quantity("a", {}, 1.0, 0.1, 1.41)["pass"] is False
    cov = quantity("s", {}, -0.5, 0.02, -0.45, ci=(-0.55, -0.46))
    assert cov["criterion"] == "covers" and cov["pass"] is False
    assert [cov["lo"], cov["hi"]] == [-0.55, -0.46]
    gt = quantity("r", {}, 3.0, 1.0, 1.0, criterion="greater")
    assert gt["pass"] is True and gt["lo"] == pytest.approx(3.0 - 1.959964, abs=1e-6)
    assert quantity("r", {}, 2.5, 1.0, 1.0, criterion="greater")["pass"] is False
    lt = quantity("e", {}, -0.2, 0.05, 0.0, ci=(-0.3, -0.1), criterion="less")
    assert lt["pass"] is True
    assert quantity("e", {}, -0.2, 0.05, 0.0, ci=(-0.3, 0.01), criterion="less")["pass"] is False
    none = quantity("x", {}, 1.0, 0.1, None, oracle=None)
    assert none["criterion"] is None and none["pass"] is None


def test_non_finite_measurement_fails_and_bad_criterion_is_refused():
    q = quantity("a", {}, math.nan, math.nan, 1.0, oracle="closed form")
    assert q["pass"] is False and q["oracle"] == "closed form"
    with pytest.raises(ValueError, match="criterion"):
        quantity("a", {}, 1.0, 0.1, 1.0, criterion="roughly")
    with pytest.raises(ValueError, match="needs a prediction"):
        quantity("a", {}, 1.0, 0.1, None, criterion="greater")


def test_a_student_t_interval_gets_its_p_value_from_the_same_t():
    """A mean of 16 replicas, 3.51 SE from the prediction: its 95% t interval misses,
    and its p-value is the t distribution's (15 degrees of freedom), not the normal's."""
    from scipy import stats

    m, se, pred = 1.0, 0.1, 1.0 - 3.51 * 0.1
    t95 = float(stats.t.ppf(0.975, 15))
    ci = (m - t95 * se, m + t95 * se)
    q = quantity("r", {}, m, se, pred, ci=ci, dof=15)
    assert q["pass"] is False
    assert q["p"] == pytest.approx(2 * stats.t.sf(3.51, 15), rel=1e-9)  # 0.0031
    # without dof the same interval's p-value is the normal's at the rescaled distance
    q_n = quantity("r", {}, m, se, pred, ci=ci)
    assert q_n["p"] == pytest.approx(2 * stats.norm.sf(1.959964 * 3.51 / t95), rel=1e-5)
    assert q_n["p"] < 0.05 / 35 < q["p"]  # Holm over 35 checks: only the t p-value survives
    # at the interval's edge both give 0.05
    edge = quantity("r", {}, m, se, m - t95 * se, ci=ci, dof=15)
    assert edge["p"] == pytest.approx(0.05, rel=1e-9)


def test_holm_matches_the_step_down_rule():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop
    assert holm(p).tolist() == [True, False, False, True]
    assert not holm(np.array([0.02] * 3)).any()


def test_run_policy_one_sided_must_be_demonstrated_two_sided_goes_through_holm():
    # one 95% miss among 20 correct two-sided checks: a chance miss, the run passes
    qs = [quantity("c", {"i": i}, 0.0, 1.0, 0.1, ci=(-1.96, 1.96)) for i in range(20)]
    qs.append(quantity("c", {"i": 20}, 0.0, 1.0, 2.2, ci=(-1.96, 1.96)))
    checks = finalize(qs)
    summary = {"quantities": qs, "checks": checks}
    assert checks["n"] == 21 and checks["n_missed"] == 1 and checks["n_failed"] == 0
    assert checks["expected_false_misses"] == pytest.approx(21 * 0.05)
    assert exit_status(summary) == 0 and "miss" in summary_table(summary)
    # a gross discrepancy survives Holm and fails the run
    qs.append(quantity("c", {"i": 21}, 0.0, 1.0, 9.0, ci=(-1.96, 1.96)))
    summary = {"quantities": qs, "checks": finalize(qs)}
    assert exit_status(summary) == 1 and "FAIL" in summary_table(summary)
    # an undemonstrated one-sided claim fails the run however many checks there are
    qs = [quantity("c", {"i": i}, 0.0, 1.0, 0.1, ci=(-1.96, 1.96)) for i in range(20)]
    qs.append(quantity("ratio", {}, 1.5, 0.5, 1.0, criterion="greater"))
    summary = {"quantities": qs, "checks": finalize(qs)}
    assert exit_status(summary) == 1
    table = summary_table(summary)
    assert "greater" in table and "criterion" in table.splitlines()[0]
