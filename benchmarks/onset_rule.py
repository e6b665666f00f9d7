"""Level and power of the onset rule (meap.stats.compare_onsets), simulated: paired NTP and MEAP branches whose
onsets share a seed effect, censored at a horizon, read off a probe grid (so ties happen).

    python benchmarks/onset_rule.py                       # the table in BENCHMARKS.md, "The onset rule"
    python benchmarks/onset_rule.py --simulations 4000

Each row: how often the rule says "meap-slower" or "meap-faster" (under the null: its level; under a 1.5x
slowdown: its power), how often the exact sign test and the stratified log-rank test reject at 5%, and how
many pairs were decided on average.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from scipy.stats import norm

from meap.stats import compare_onsets

SEED_SD = 0.5  # between seeds, in log tokens: some seeds learn the skill far earlier than others


def simulated_onsets(rng, seeds: int, slowdown: float, noise: float, horizon_quantile: float, probes: int = 50):
    """(NTP onsets, MEAP onsets), horizon: a seed effect shared by both branches (sd SEED_SD in log tokens),
    each branch's own noise (sd ``noise``), MEAP ``slowdown`` times later; read off a grid of ``probes``
    probes and censored (None) beyond the horizon, the ``horizon_quantile`` of NTP's onset distribution."""
    seed_effect = rng.normal(0, SEED_SD, seeds)
    logs = [seed_effect + rng.normal(0, noise, seeds), seed_effect + np.log(slowdown) + rng.normal(0, noise, seeds)]
    horizon = float(np.exp(norm.ppf(horizon_quantile) * np.hypot(SEED_SD, noise)))
    step = horizon / probes
    onsets = [[None if t > horizon else float(np.ceil(t / step) * step) for t in np.exp(x)] for x in logs]
    return onsets, horizon


def simulate(seeds: int, slowdown: float, noise: float, horizon_quantile: float, simulations: int, seed: int):
    """compare_onsets' result for each of ``simulations`` simulated experiments."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(simulations):
        (ntp, meap), horizon = simulated_onsets(rng, seeds, slowdown, noise, horizon_quantile)
        found.append(compare_onsets(ntp, meap, horizon))
    return found


def rates(found: list[dict]) -> dict:
    return {
        "directional": float(np.mean([r["decision"] in ("meap-faster", "meap-slower") for r in found])),
        "meap_slower": float(np.mean([r["decision"] == "meap-slower" for r in found])),
        "sign_rejects": float(np.mean([r["sign_p"] is not None and r["sign_p"] < 0.05 for r in found])),
        "logrank_rejects": float(np.mean([r["logrank_p"] is not None and r["logrank_p"] < 0.05 for r in found])),
        "decided_pairs": float(np.mean([r["decided_pairs"] for r in found])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for slowdown, seeds, noise, quantile in itertools.product((1.0, 1.5), (8, 16), (0.2, 0.3), (0.5, 0.9)):
        found = simulate(seeds, slowdown, noise, quantile, args.simulations, seed=len(rows))
        rows.append(
            {"slowdown": slowdown, "seeds": seeds, "noise": noise, "horizon_quantile": quantile, **rates(found)}
        )
        row = rows[-1]
        print(
            f"slowdown {slowdown:.1f}  seeds {seeds:2d}  noise {noise:.1f}  horizon q {quantile:.1f}  "
            f"rule {row['directional']:.3f}  sign {row['sign_rejects']:.3f}  log-rank {row['logrank_rejects']:.3f}  "
            f"decided {row['decided_pairs']:.1f}",
            flush=True,
        )
    print(json.dumps({"simulations": args.simulations, "seed_sd": SEED_SD, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
