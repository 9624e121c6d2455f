#!/usr/bin/env python3
"""Expected numbers for the statistics behind `filtermon compare`, from numpy, scipy and statsmodels.

Writes, into tests/fixtures/stats/:
  ols.csv        the regression fixture: group, y, x1..x4 (x4 is a 0/1 indicator), seeded
  expected.json  OLS coefficients and cluster-robust standard errors / 95% CIs
                 (statsmodels, cov_type='cluster': CRV1 with the G/(G-1)*(N-1)/(N-K) correction,
                 normal quantiles as statsmodels uses by default), McNemar p-values
                 (statsmodels mcnemar exact=True and exact=False with continuity correction,
                 cross-checked against scipy), numpy's linear quantiles and a cluster ratio mean.

The Rust tests (tests/stats_reference.rs) compare against the committed files, so neither CI
nor users need Python. Run with the project's venv:  python scripts/compare_reference.py
"""

import json
from pathlib import Path

import numpy as np
import scipy.stats
import statsmodels
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stats"


def ols_fixture(rng):
    groups, n_per = 24, rng.integers(5, 30, size=24)
    g = np.repeat(np.arange(groups), n_per)
    n = len(g)
    x1 = rng.normal(5.0, 2.0, n)  # like log frequency
    x2 = np.log1p(rng.integers(1, 2048, n))  # like log position
    x3 = rng.exponential(1.0, n)
    x4 = (rng.random(n) < 0.3).astype(float)  # a category indicator
    u = rng.normal(0.0, 0.4, groups)[g]  # document effect: errors correlate within a cluster
    y = 0.05 - 0.02 * x1 + 0.01 * x2 + 0.03 * x3 + 0.04 * x4 + u + rng.normal(0.0, 0.5, n)
    return g, y, np.column_stack([x1, x2, x3, x4])


def main():
    rng = np.random.default_rng(20260417)
    OUT.mkdir(parents=True, exist_ok=True)
    g, y, x = ols_fixture(rng)
    with open(OUT / "ols.csv", "w") as f:
        f.write("group,y,x1,x2,x3,x4\n")
        for i in range(len(y)):
            f.write(",".join([str(g[i]), repr(float(y[i]))] + [repr(float(v)) for v in x[i]]) + "\n")
    X = sm.add_constant(x)
    fit = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g})
    ci = fit.conf_int(0.05)
    ols = {
        "names": ["const", "x1", "x2", "x3", "x4"],
        "params": fit.params.tolist(),
        "bse": fit.bse.tolist(),
        "ci_lo": ci[:, 0].tolist(),
        "ci_hi": ci[:, 1].tolist(),
        "nobs": int(fit.nobs),
        "groups": int(len(np.unique(g))),
    }

    # (b, c): discordant counts, b = A right & B wrong, c = A wrong & B right.
    pairs = [(0, 0), (0, 1), (3, 7), (10, 2), (12, 12), (0, 24), (30, 45), (100, 140), (513, 498), (7, 60)]
    mc = []
    for b, c in pairs:
        table = [[11, b], [c, 17]]
        exact = mcnemar(table, exact=True)
        # With no discordant pair the chi-square statistic is 0/0: filtermon reports p = 1.
        chi2 = mcnemar(table, exact=False, correction=True) if b + c > 0 else None
        if b + c > 0:
            # Independent cross-check of statsmodels with scipy.
            assert abs(scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue - exact.pvalue) < 1e-12
        mc.append({
            "b": b,
            "c": c,
            "exact_statistic": float(exact.statistic),
            "exact_pvalue": float(exact.pvalue),
            "chi2_statistic": float(chi2.statistic) if chi2 else None,
            "chi2_pvalue": float(chi2.pvalue) if chi2 else None,
        })

    data = rng.normal(0.0, 1.0, 37)
    qs = [0.0, 0.025, 0.1, 0.5, 0.9, 0.975, 1.0]
    sums = rng.normal(0.0, 3.0, 15)
    counts = rng.integers(0, 40, 15).astype(float)
    quant = {
        "data": data.tolist(),
        "q": qs,
        "expected": np.quantile(np.sort(data), qs, method="linear").tolist(),
        "cluster_sums": sums.tolist(),
        "cluster_counts": counts.tolist(),
        "ratio": float(sums.sum() / counts.sum()),
    }
    expected = {
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "statsmodels": statsmodels.__version__},
        "ols": ols,
        "mcnemar": mc,
        "quantile": quant,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT/'ols.csv'} ({len(y)} rows) and {OUT/'expected.json'}")


if __name__ == "__main__":
    main()
