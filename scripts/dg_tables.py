"""Markdown tables of a ``scripts/measure_dual_glow.py --json`` report (docs/benchmarks.md).

    python scripts/dg_tables.py REPORT.json

Prints the accuracy, age response (with the issue's criteria evaluated), disentanglement,
downstream, out-of-distribution and cost tables, so the page quotes the report's figures.
"""

from __future__ import annotations

import json
import sys
from typing import Any

AGEING = ("frontal", "anterior_cingulate")


def _pm(pair: list[float], digits: int) -> str:
    return f"{pair[0]:.{digits}f} +- {pair[1]:.{digits}f}"


def accuracy(rep: dict[str, Any]) -> None:
    print("| | MAE | PSNR (dB) | SSIM | correlation |\n|---|---|---|---|---|")
    for name, s in rep["accuracy"].items():
        if not isinstance(s, dict) or "mae" not in s:
            continue
        print(f"| {name} | {_pm(s['mae'], 3)} | {_pm(s['psnr'], 2)} | {_pm(s['ssim'], 3)} | "
              f"{_pm(s['corrcoef'], 3)} |")
    failed = rep["accuracy"].get("failed (translate refused non-finite output)")
    if failed:
        print(f"\nrefused (non-finite output): {json.dumps(failed)}")


def age_response(rep: dict[str, Any]) -> None:
    a = rep["age_response"]
    print(f"{a['subjects']} subjects, ages {a['ages'][0]:g}-{a['ages'][-1]:g}, trained "
          f"{a['trained_age_range'][0]:g}-{a['trained_age_range'][1]:g}\n")
    print("| region | Spearman rho, raw | slope raw (/year) | slope vs occipital | slope in SUVR | "
          "true slope |\n|---|---|---|---|---|---|")
    regions = a["regions"]
    for name, r in regions.items():
        label = name.replace("_", " ") + ("" if name in AGEING else " (not aged)")
        print(f"| {label} | {r['spearman_raw']:+.2f} | {r['log_slope_raw']:+.4f} | "
              f"{r['slope_vs_occipital']:+.4f} | {r['log_slope_suvr']:+.4f} | "
              f"{r['true_slope_vs_occipital']:+.4f} |")
    print("\nThe issue's criteria, on the raw synthesized uptake:")
    for name in AGEING:
        r = regions[name]
        ratio = r["log_slope_raw"] / r["true_slope_vs_occipital"]
        print(f"- {name}: rho {r['spearman_raw']:+.2f} (needs <= -0.9), slope {ratio:.0%} of the "
              f"true one (needs 50-150 %)")
    flat = [abs(r["log_slope_raw"]) for n, r in regions.items() if n not in AGEING]
    aged = [abs(regions[n]["log_slope_raw"]) for n in AGEING]
    print(f"- regions the phantom does not age: |slope| at most {max(flat):.4f}/year "
          f"({max(flat) / min(aged):.0%} of the smaller ageing slope), "
          f"{sum(flat) / len(flat):.4f} on average ({sum(flat) / len(flat) / min(aged):.0%})")


def disentanglement(rep: dict[str, Any]) -> None:
    d = rep["disentanglement"]
    rows = [("lower MRI latents", "lower"), ("top MRI latent", "top"),
            ("top PET latent (true PET)", "pet_top")]
    print("| latents | ridge on pooled, CV on held-out | ridge on pooled, fitted on training cohort | "
          "ridge on every voxel, fitted on training cohort | the model's own head |")
    print("|---|---|---|---|---|")
    heads = {"lower": ", ".join(f"{v:+.2f}" for v in d["r2_lower_adversary_heads"]),
             "top": f"{d['r2_top_keep_head']:+.2f}", "pet_top": f"{d['r2_pet_top_keep_head']:+.2f}"}
    for label, key in rows:
        print(f"| {label} | {d['r2_' + key]:+.2f} | "
              f"{d.get(f'r2_{key}_probe_fitted_on_training_cohort', float('nan')):+.2f} | "
              f"{d.get(f'r2_{key}_voxels_probe_fitted_on_training_cohort', float('nan')):+.2f} | "
              f"{heads[key]} |")


def downstream(rep: dict[str, Any]) -> None:
    d = rep["downstream"]
    print(f"{d['AD']} AD, {d['CN']} CN\n")
    print("| features | leave-one-out accuracy | SVM fitted on true PET of the training cohort |")
    print("|---|---|---|")
    for name, acc in d["leave_one_out_accuracy"].items():
        other = d.get("trained_on_true_pet_of_training_cohort", {}).get(name, float("nan"))
        print(f"| {name} | {acc:.2f} | {other:.2f} |")


def out_of_distribution(rep: dict[str, Any]) -> None:
    o = rep["out_of_distribution"]
    print("| given as T1 | bits per voxel (mean, min-max) | warned |\n|---|---|---|")
    for name, r in o.items():
        if name == "reference":
            continue
        print(f"| {name.split(' given')[0]} | {r['bits_mean']:.2f} ({r['bits_min']:.2f}-"
              f"{r['bits_max']:.2f}) | {r['warned']} / {r['subjects']} |")
    print(f"\nreference: {json.dumps(o['reference'])}")


def cost(rep: dict[str, Any]) -> None:
    c = rep.get("cost")
    if not c:
        return
    print(f"one sample {c['s_per_volume_1_samples']:.2f} s, eight {c['s_per_volume_8_samples']:.2f} s, "
          f"translate call {c['s_translate_call_1_sample']:.2f} s")
    for p in c["training_probes"]:
        print(json.dumps(p))


if __name__ == "__main__":
    report = json.loads(open(sys.argv[1]).read())
    print(f"checkpoint {report['checkpoint']}, steps {report['card_steps']}\n")
    for section in (accuracy, age_response, disentanglement, downstream, out_of_distribution,
                    cost):
        if section.__name__ in report:
            print(f"### {section.__name__}\n")
            section(report)
            print()
