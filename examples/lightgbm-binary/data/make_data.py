"""Write churn.csv: 800 synthetic customers, a categorical column and missing values (seeded: the same
file every run). `python examples/lightgbm-binary/data/make_data.py`"""

import csv
from pathlib import Path

import numpy as np

ROWS = 800
PLANS = ("basic", "standard", "premium")


def main() -> None:
    rng = np.random.default_rng(7)
    tenure = rng.integers(1, 72, ROWS)
    charges = np.round(rng.normal(65, 20, ROWS).clip(15, 140), 2)
    plan = rng.choice(PLANS, ROWS, p=[0.5, 0.3, 0.2])
    support = rng.random(ROWS) < 0.4
    plan_risk = {"basic": 0.8, "standard": 0.0, "premium": -0.9}
    logit = 1.2 - 0.06 * tenure + 0.02 * (charges - 65) + np.vectorize(plan_risk.get)(plan) - 0.9 * support
    churned = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(int)
    # Missing values: a charge the billing system lost, a plan nobody recorded.
    charges_missing = rng.random(ROWS) < 0.06
    plan_missing = rng.random(ROWS) < 0.05
    path = Path(__file__).with_name("churn.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tenure_months", "monthly_charges", "plan", "has_support", "churned"])
        for i in range(ROWS):
            writer.writerow(
                [
                    int(tenure[i]),
                    "" if charges_missing[i] else f"{charges[i]:.2f}",
                    "" if plan_missing[i] else plan[i],
                    bool(support[i]),
                    int(churned[i]),
                ]
            )


if __name__ == "__main__":
    main()
