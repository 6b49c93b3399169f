"""Benchmark: the anytime-valid paired test's validity and efficiency (issue 15 targets).

    .venv/bin/python benchmarks/bench_sequential.py [--comparisons 2000] [--alpha 0.05] [--seed 0]

Synthetic paired streams, no simulator: a seed has a difficulty u ~ U(0, 1) and a policy
reaches stage k when u < P(stage >= k) (success = the last stage). ``coupling`` is the
probability that both policies of a pair see the same u (the seed decides both outcomes);
otherwise they see independent ones (coupling 0 = the most discordant pairs, the
hardest case for both the sequential and the fixed-n test). The test is looked at after
every pair (`roboloop.stats.sequential.simulate_sequential`, the kernel of `PairedSequentialTest`).

1. Validity (H0 true: a policy against itself): per-cell success 0.6-0.9, v1-like stage
   distributions for partial credit, the FIELD-NOTES v1/v2 cell rates, and a 4-cell
   evaluation with the Bonferroni split (familywise). Reported: the fraction of comparisons
   that ever declare improved/regressed (type-I), its Monte Carlo bound alpha + 2 SE, and
   how often the correct no_difference was reached.
2. Efficiency: a 20-point improvement at baseline 0.6/0.7/0.8, binary and partial credit
   side by side (partial: the challenger's failures keep the baseline's stage mix, or
   happen later, ``LATER_MIX``): mean and 90th-percentile pairs to a decision against the pairs the
   fixed-n exact McNemar test needs for 80% power at the same alpha (computed exactly for
   the same pairing), and the floor no test that stops on evidence can beat
   (Wald: log(2/alpha) / KL per pair, binary). Couplings 0, 0.5 and 1 (1: the seed decides
   both outcomes, so the challenger never does worse on a seed). For reference only (not
   the target's comparison): the fixed-n a plan for the issue's default 15-point effect
   under independence would have used.
3. The v1 -> v2 cells of FIELD-NOTES as `roboloop demo` runs them (4 cells, alpha/4 each,
   rounds of 5 pairs) against the fixed grid's 30 per cell.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from roboloop.stats import sequential as sq

# v1-like failures (FIELD-NOTES: the BC policy's failures are missed grasps: never touched /
# not lifted), as probabilities over the failing stages none, right_grasp, lift, left_grasp.
FAIL_MIX = np.array([0.5, 0.35, 0.1, 0.05])
# a challenger whose remaining failures happen later (e.g. a fixed grasp that now drops the cube
# at the handover): the case where partial credit carries information that success does not.
LATER_MIX = np.array([0.1, 0.2, 0.3, 0.4])


def stages(success: float, fail_mix: np.ndarray = FAIL_MIX) -> np.ndarray:
    return np.concatenate([(1 - success) * fail_mix, [success]])


def binary(p: float) -> np.ndarray:
    return np.array([1 - p, 0, 0, 0, p])


def streams(rng, n, pairs, base, chal, coupling, metric):
    a, b = sq.sample_paired_scores(rng, (n, pairs), base, chal, coupling)
    if metric == "binary":
        a, b = (a >= 1).astype(float), (b >= 1).astype(float)
    return b - a


def kl_bernoulli(q: float, p: float = 0.5) -> float:
    out = 0.0
    for x, y in ((q, p), (1 - q, 1 - p)):
        if x > 0:
            out += x * math.log(x / y)
    return out


def validity(args) -> None:
    if args.skip_validity:
        return
    print("\n## Validity (H0 true: a policy against itself; looked at after every pair)\n")
    print(f"alpha {args.alpha}, {args.comparisons} comparisons per setting, up to {args.max_pairs} pairs each, margin 0.1\n")
    print("| setting | metric | coupling | declared a difference | bound alpha + 2 SE | met | no_difference reached | mean pairs |")
    print("|---|---|---|---|---|---|---|---|")
    settings = []
    for p in (0.6, 0.75, 0.9):
        for c in (0.0, 0.5):
            settings.append((f"success {p}", binary(p), "binary", c))
            settings.append((f"success {p}, v1-like stages", stages(p), "partial", c))
    for name, p in (("v1 yaw small 8/90", 8 / 90), ("v1 yaw any 15/90", 15 / 90), ("v2 yaw 25..45 85/90", 85 / 90)):
        settings.append((name, binary(p), "binary", 0.0))
        settings.append((name + ", v1-like stages", stages(p), "partial", 0.0))
    bound = args.alpha + 2 * math.sqrt(args.alpha * (1 - args.alpha) / args.comparisons)
    for i, (name, dist, metric, c) in enumerate(settings):
        rng = np.random.default_rng([args.seed, 1, i])
        d = streams(rng, args.comparisons, args.max_pairs, dist, dist, c, metric)
        code, at = sq.simulate_sequential(d, args.alpha, 0.1)
        false = np.isin(code, [1, 2]).mean()
        print(f"| {name} | {metric} | {c} | {false:.4f} | {bound:.4f} | {'yes' if false <= bound else 'NO'} "
              f"| {(code == 3).mean():.3f} | {at.mean():.0f} |")
    # familywise: 4 cells (the demo's grid), each at alpha / 4; a comparison errs if any cell does
    rates = (0.95, 0.75, 0.6, 0.9)
    worst = np.zeros(args.comparisons, dtype=bool)
    for j, p in enumerate(rates):
        rng = np.random.default_rng([args.seed, 2, j])
        d = streams(rng, args.comparisons, args.max_pairs, binary(p), binary(p), 0.0, "binary")
        code, _ = sq.simulate_sequential(d, args.alpha / len(rates), 0.1)
        worst |= np.isin(code, [1, 2])
    fw = worst.mean()
    print(f"| 4 cells {rates}, familywise (alpha/4 each) | binary | 0.0 | {fw:.4f} | {bound:.4f} | "
          f"{'yes' if fw <= bound else 'NO'} | - | - |")


def efficiency(args) -> None:
    print("\n## Efficiency (20-point improvement; pairs to a decision)\n")
    print(f"alpha {args.alpha} (two-sided), {args.comparisons} comparisons per row, cap {args.cap} pairs (undecided count as the cap); "
          "fixed-n = exact McNemar, 80% power, same alpha, computed exactly for the row's pairing; "
          "floor = log(2/alpha) / KL per pair (binary, the best any test that stops on evidence can do on average)\n")
    print("| baseline -> challenger | coupling | fixed-n | metric | improved | mean | p90 | mean / fixed-n | p90 / fixed-n | floor / fixed-n "
          "| fixed-n planned for 15 pts (indep.) | mean / that |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    i = 0
    for pa in (0.6, 0.7, 0.8):
        pb = pa + 0.2
        for c in (0.0, 0.5, 1.0):
            nf = sq.mcnemar_sample_size(pa, 0.2, args.alpha, 0.8, coupling=c)
            n15 = sq.mcnemar_sample_size(pa, 0.15, args.alpha, 0.8, coupling=0.0)
            p01, p10 = sq.paired_binary_probs(pa, pb, c)
            floor = math.log(2 / args.alpha) / ((p01 + p10) * kl_bernoulli(p01 / (p01 + p10)))
            base = stages(pa)
            same_mix = sq.improved_stage_probs(base, 0.2)
            later = stages(pb, LATER_MIX)
            for metric, chal in (("binary", same_mix), ("partial", same_mix), ("partial, failures later", later)):
                i += 1
                rng = np.random.default_rng([args.seed, 3, i])
                d = streams(rng, args.comparisons, args.cap, base, chal, c, metric.split(",")[0])
                code, at = sq.simulate_sequential(d, args.alpha, 0.1)
                mean, p90 = at.mean(), np.percentile(at, 90)
                fl = f"{floor / nf:.2f}" if metric == "binary" else "-"
                print(f"| {pa:.1f} -> {pb:.1f} | {c} | {nf} | {metric} | {(code == 1).mean():.3f} | {mean:.1f} | {p90:.0f} "
                      f"| {mean / nf:.2f} | {p90 / nf:.2f} | {fl} | {n15} | {mean / n15:.2f} |")


def demo_cells(args) -> None:
    print("\n## FIELD-NOTES v1 -> v2 cells as the demo runs them (4 cells, alpha/4 each, rounds of 5, max 200)\n")
    cells = {  # v1 and v2 success over 90 rollouts (three training seeds x 30)
        "yaw=none": (90 / 90, 90 / 90),
        "yaw=small": (8 / 90, 89 / 90),
        "yaw=25..45 (gap)": (0 / 90, 85 / 90),
        "yaw=any": (15 / 90, 89 / 90),
    }
    print("| cell | v1 -> v2 | metric | decision (most common) | share | mean pairs | p90 | fixed grid | mean / grid |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {0: "undecided", 1: "improved", 2: "regressed", 3: "no_difference"}
    for j, (cell, (pa, pb)) in enumerate(cells.items()):
        base = stages(pa)
        chal = stages(pb)
        for metric in ("binary", "partial"):
            rng = np.random.default_rng([args.seed, 4, j, metric == "partial"])
            d = streams(rng, args.comparisons, 200, base, chal, 0.0, metric)
            code, at = sq.simulate_sequential(d, args.alpha / len(cells), 0.1)
            used = np.minimum(np.ceil(at / 5) * 5, 200)  # whole rounds of 5 pairs
            top = np.bincount(code, minlength=4).argmax()
            print(f"| {cell} | {pa:.2f} -> {pb:.2f} | {metric} | {names[int(top)]} | {(code == top).mean():.3f} "
                  f"| {used.mean():.1f} | {np.percentile(used, 90):.0f} | 30 | {used.mean() / 30:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comparisons", type=int, default=2000, help="simulated comparisons per setting")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--max-pairs", type=int, default=500, help="pairs per H0 comparison")
    ap.add_argument("--cap", type=int, default=1000, help="maximum pairs per comparison in the efficiency runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-validity", action="store_true", help="only the efficiency and demo sections")
    args = ap.parse_args()
    t0 = time.perf_counter()
    validity(args)
    efficiency(args)
    demo_cells(args)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
