"""Write loans.csv: 600 synthetic loan applications of mixed types (numbers, strings, missing values)
with a string label (seeded: the same file every run). `python examples/custom-pipeline/data/make_data.py`"""

import csv
from pathlib import Path

import numpy as np

ROWS = 600
EMPLOYMENT = ("salaried", "self-employed", "unemployed", "retired")
CITIES = ("Lyon", "Paris", "Marseille", "Lille")


def main() -> None:
    rng = np.random.default_rng(11)
    income = np.round(rng.lognormal(10.4, 0.45, ROWS), 0)
    age = rng.integers(19, 80, ROWS)
    employment = rng.choice(EMPLOYMENT, ROWS, p=[0.55, 0.2, 0.1, 0.15])
    city = rng.choice(CITIES, ROWS)
    amount = np.round(rng.uniform(1_000, 40_000, ROWS), -2)
    employment_effect = {"salaried": 0.9, "self-employed": 0.2, "unemployed": -1.8, "retired": 0.3}
    logit = (
        1.5 * (np.log(income) - 10.4) / 0.45
        - 1.1 * (amount - 20_000) / 11_000
        + np.vectorize(employment_effect.get)(employment)
        + 0.3
    )
    approved = rng.random(ROWS) < 1 / (1 + np.exp(-logit))
    income_missing = rng.random(ROWS) < 0.05
    city_missing = rng.random(ROWS) < 0.04
    path = Path(__file__).with_name("loans.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["income", "age", "employment", "city", "amount", "decision"])
        for i in range(ROWS):
            writer.writerow(
                [
                    "" if income_missing[i] else f"{income[i]:.0f}",
                    int(age[i]),
                    employment[i],
                    "" if city_missing[i] else city[i],
                    f"{amount[i]:.0f}",
                    "approved" if approved[i] else "declined",
                ]
            )


if __name__ == "__main__":
    main()
