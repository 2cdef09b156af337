"""Paired differences over seeds: the t-interval against hand-computed values, and the pairing."""
import math

import pytest

from elth.analysis.stats import (
    WITHIN_NOISE,
    format_difference,
    mean_interval,
    paired_difference,
    pooled,
    t_quantile_975,
)


def test_t_interval_by_hand():
    # values 1, 2, 3, 4: mean 2.5, sample std sqrt(5/3), t_{0.975, 3} = 3.182446
    iv = mean_interval([1, 2, 3, 4])
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert iv.mean == pytest.approx(2.5)
    assert iv.low == pytest.approx(2.5 - half) and iv.high == pytest.approx(2.5 + half)
    assert iv.low == pytest.approx(0.4457, abs=1e-4) and iv.high == pytest.approx(4.5543, abs=1e-4)
    assert not iv.contains_zero


def test_t_quantiles():
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3)  # beyond the table: the expansion
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_one_value_has_no_interval():
    iv = mean_interval([0.3])
    assert iv.low is None and iv.half_width is None and iv.contains_zero


def test_pairs_only_equal_seeds():
    a = {0: 0.90, 1: 0.80, 2: 0.70}
    b = {1: 0.75, 2: 0.60, 3: 0.10}
    d = paired_difference(a, b)
    assert d.seeds == (1, 2) and d.unpaired_seeds == (0, 3)
    assert d.differences == pytest.approx((0.05, 0.10))
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_pairing_removes_the_shared_seed_spread():
    # Seeds differ by several points, ETT is always 0.2 points below IMP: the interval is tight.
    imp = {0: 0.85, 1: 0.88, 2: 0.91}
    ett = {s: v - 0.002 for s, v in imp.items()}
    d = paired_difference(ett, imp)
    assert d.mean == pytest.approx(-0.002)
    assert d.interval.high - d.interval.low == pytest.approx(0.0, abs=1e-9)


def test_pooling_averages_within_each_seed_first():
    d1 = paired_difference({0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.0, 1: 0.0, 2: 0.0})
    d2 = paired_difference({0: 0.3, 1: 0.2, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    p = pooled([d1, d2])
    assert p.seeds == (0, 1, 2)
    assert p.differences == pytest.approx((0.2, 0.2, 0.4))
    d3 = paired_difference({1: 0.0, 5: 0.0}, {1: 0.0, 5: 0.0})
    assert pooled([d1, d3]).seeds == (1,)


def test_format_marks_intervals_containing_zero():
    close = paired_difference({0: 0.1, 1: -0.1, 2: 0.05}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert format_difference(close).endswith(WITHIN_NOISE)
    clear = paired_difference({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, {s: 0.0 for s in range(4)})
    assert format_difference(clear, scale=1.0) == "+2.50 [+0.45, +4.55]"
    assert format_difference(paired_difference({0: 0.01}, {0: 0.0})) == "+1.00 (1 seed)"
    assert format_difference(None) == "n/a"
