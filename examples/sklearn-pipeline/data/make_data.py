"""Write applicants.csv: 1200 synthetic credit applicants, numbers and two string columns, each with
missing values (seeded: the same file every run). `python examples/sklearn-pipeline/data/make_data.py`"""

import csv
from pathlib import Path

import numpy as np

ROWS = 1200
CITIES = ("Paris", "Lyon", "Lille", "Nantes")
CHANNELS = ("web", "branch", "broker")


def main() -> None:
    rng = np.random.default_rng(31)
    age = rng.integers(19, 75, ROWS)
    income = np.round(rng.lognormal(10.4, 0.45, ROWS), 2)
    debt_ratio = np.round(rng.beta(2, 5, ROWS), 4)
    city = rng.choice(CITIES, ROWS, p=[0.4, 0.25, 0.2, 0.15])
    channel = rng.choice(CHANNELS, ROWS, p=[0.5, 0.3, 0.2])
    city_effect = {"Paris": 0.3, "Lyon": 0.0, "Lille": -0.4, "Nantes": 0.1}
    channel_effect = {"web": 0.0, "branch": 0.5, "broker": -0.6}
    logit = (
        0.9 * (np.log(income) - 10.4) / 0.45
        - 4.0 * (debt_ratio - 0.28)
        + 0.02 * (age - 45)
        + np.vectorize(city_effect.get)(city)
        + np.vectorize(channel_effect.get)(channel)
    )
    approved = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(int)
    # Missing values: an income nobody declared, an age left blank, a city or a channel not recorded.
    gaps = {
        name: rng.random(ROWS) < share
        for name, share in (("income", 0.08), ("age", 0.05), ("city", 0.07), ("channel", 0.06))
    }
    path = Path(__file__).with_name("applicants.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "debt_ratio", "city", "channel", "approved"])
        for i in range(ROWS):
            writer.writerow(
                [
                    "" if gaps["age"][i] else int(age[i]),
                    "" if gaps["income"][i] else f"{income[i]:.2f}",
                    f"{debt_ratio[i]:.4f}",
                    "" if gaps["city"][i] else city[i],
                    "" if gaps["channel"][i] else channel[i],
                    int(approved[i]),
                ]
            )


if __name__ == "__main__":
    main()
