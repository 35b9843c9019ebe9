#!/usr/bin/env python3
"""Builds bench/scenarios/cn-hubs-300.json (issue 10's scenario format) from the hub reference
data in bench/data/ (copied from the shared data folder, sources in each row's `source` column
and in bench/data/README.md). Deterministic (fixed seed); stdlib only. Run by hand:

    python3 bench/make-hub-scenario.py [--jobs 300] [--seed 7] > bench/scenarios/cn-hubs-300.json

What is data and what is an assumption:
- PUE, TOU peak/valley ratios and hours, flat price where published, grid carbon factors, RTTs:
  from the CSVs (RTTs are the file's own ESTIMATEs, derived from CAICT averages).
- Flat prices where the CSV has none, and TOU shapes where none is published: the ESTIMATE
  fallbacks of regions-notes.md §3.5, marked "estimate" in the output's notes.
- Carbon intensity is flat over the day (annual provincial/regional factors; no hourly curve is
  published for these grids).
- Embodied carbon 3.74 g per GPU-hour: H100 SXM5 164 kgCO2e per GPU (NVIDIA HGX H100 PCF
  summary) over an assumed 5-year, always-on life.
- Transfer 0.14 CNY/GB: the §5.4 ESTIMATE. Carbon price 80 CNY/t: an assumption near China's
  national ETS price in 2024-2025. Waiting 2 CNY per GPU-hour: an assumption.
- Free GPUs per hour and the jobs are synthetic (seeded): eastern clusters are busier by day.
"""
import argparse, csv, json, os, random

HERE = os.path.dirname(os.path.abspath(__file__))

# regions-notes.md §3.5 fallbacks (ESTIMATE): flat CNY/kWh and TOU (peak ratio, valley ratio, peak hours, valley hours)
FALLBACK = {
    "cn-jjj-zhangjiakou": (0.55, None),
    "cn-yrd-demozone": (0.68, (1.7, 0.35, "8-11;17-22", "0-8")),
    "cn-yrd-wuhu": (0.62, (1.7, 0.35, "8-11;17-22", "0-8")),
    "cn-gba-shaoguan": (0.70, None),
    "cn-cy-tianfu": (0.55, (1.6, 0.4, "10-12;14-21", "23-24;0-7")),
    "cn-cy-chongqing": (0.60, (1.6, 0.4, "10-12;14-21", "23-24;0-7")),
    "cn-nmg-helinger": (0.38, (None, None, "17-22", "10-16")),
    "cn-gz-guian": (0.45, (1.6, 0.4, "9-12;17-22", "0-8")),
    "cn-gs-qingyang": (0.42, (1.5, 0.5, "17-23", "10-16")),
    "cn-nx-zhongwei": (0.36, (1.5, 0.5, "17-23", "10-16")),
}
EAST = {"cn-jjj-zhangjiakou", "cn-yrd-demozone", "cn-yrd-wuhu", "cn-gba-shaoguan"}


def hours(spec):
    out = set()
    for part in (spec or "").split(";"):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--capacity-scale", type=float, default=1.0,
                    help="multiply every cluster's GPUs (0.25: a congested network)")
    ap.add_argument("--national-config", action="store_true",
                    help="print a national controller config with the ten hub region profiles instead")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    regions, notes = [], {}
    with open(os.path.join(HERE, "data", "regions-cn-hubs.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rid = row["region_id"]
            flat_est, tou_est = FALLBACK[rid]
            flat = float(row["price_flat_cny_kwh"]) if row["price_flat_cny_kwh"] else flat_est
            peak = float(row["tou_peak_ratio"]) if row["tou_peak_ratio"] else (tou_est[0] if tou_est and tou_est[0] else 1.0)
            valley = float(row["tou_valley_ratio"]) if row["tou_valley_ratio"] else (tou_est[1] if tou_est and tou_est[1] else 1.0)
            ph = hours(row["tou_peak_hours"]) or hours(tou_est[2] if tou_est else "")
            vh = hours(row["tou_valley_hours"]) or hours(tou_est[3] if tou_est else "")
            price = [round(flat * (peak if h in ph else valley if h in vh else 1.0), 4) for h in range(24)]
            g = float(row["grid_factor_tco2_mwh"]) * 1000
            pue = float(row["pue_reported"] or row["pue_target"])
            cap = rng.choice([256, 384, 512]) if rid not in EAST else rng.choice([128, 192, 256])
            cap = max(8, int(cap * args.capacity_scale))
            free = []
            for h in range(args.hours):
                day = 8 <= h % 24 < 22
                busy = (0.55 if rid in EAST else 0.3) + (0.25 if day and rid in EAST else 0.0) + rng.uniform(-0.1, 0.1)
                free.append(max(0, int(cap * (1 - min(0.95, busy)))))
            regions.append({"id": rid, "jurisdiction": row["jurisdiction"].split("|")[0], "pue": pue,
                            "price_per_kwh": price, "carbon_g_per_kwh": [round(g, 1)] * 24, "free_gpus": free,
                            "embodied_g_per_gpu_hour": 3.74})
            notes[rid] = {"price": "csv" if row["price_flat_cny_kwh"] else "estimate (regions-notes.md 3.5)",
                          "tou": "csv" if row["tou_peak_ratio"] else ("estimate (regions-notes.md 3.5)" if tou_est else "flat"),
                          "source": row["source"], "jurisdictions": row["jurisdiction"].split("|")}
    rtt = {}
    with open(os.path.join(HERE, "data", "network-cn-hubs.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rtt.setdefault(row["from_region"], {})[row["to_region"]] = float(row["rtt_ms"])
    if args.national_config:
        print_national_config(regions, notes, rtt)
        return
    ids = [r["id"] for r in regions]
    jur = {r["id"]: r["jurisdiction"] for r in regions}
    east = [i for i in ids if i in EAST]
    jobs = []
    for n in range(args.jobs):
        kind = rng.choices(["train", "finetune", "infer"], weights=[2, 3, 5])[0]
        gpus = {"train": rng.choice([8, 16, 32]), "finetune": rng.choice([1, 2, 4, 8]), "infer": rng.choice([1, 2])}[kind]
        length = {"train": rng.randint(4, 12), "finetune": rng.randint(1, 4), "infer": rng.randint(1, 3)}[kind]
        kw = {"train": 0.55, "finetune": 0.45, "infer": 0.3}[kind]
        release = rng.randint(0, args.hours // 2)
        slack = {"train": rng.randint(2, 16), "finetune": rng.randint(1, 8), "infer": rng.randint(0, 2)}[kind]
        origin = rng.choice(east)
        allowed = []
        r = rng.random()
        if r < 0.2:
            allowed = [jur[origin]]                       # data may not leave its province
        elif r < 0.3:
            allowed = [jur[origin], "CN-NX", "CN-GZ"]     # or only to named western hubs
        jobs.append({"id": f"j{n:05d}", "kind": kind, "gpus": gpus, "hours": length, "kw_per_gpu": kw,
                     "release_hour": release, "deadline_hour": min(args.hours, release + length + slack), "origin": origin,
                     "data_gb": round(rng.uniform(1, 50) if kind == "infer" else rng.uniform(20, 800), 1),
                     "allowed_jurisdictions": allowed, "latency_slo_ms": 20.0 if kind == "infer" else None})
    json.dump({"hours": args.hours, "currency": "CNY", "carbon_price_per_tonne": 80.0, "transfer_price_per_gb": 0.14,
               "wait_cost_per_gpu_hour": 2.0, "regions": regions, "rtt_ms": rtt, "jobs": jobs, "notes": notes},
              os.sys.stdout, indent=1)


def print_national_config(regions, notes, rtt):
    """controller-config/national-cn-hubs.yaml: the national scheduler with the ten hub profiles."""
    print("# National scheduler with the profiles of the ten clusters of the eight national hubs.")
    print("# Generated by `python3 bench/make-hub-scenario.py --national-config`; figures from")
    print("# bench/data/*.csv with their sources; ESTIMATE fallbacks and assumptions as the script says.")
    print("role: national\nid: national\nbind: tcp://127.0.0.1:7700\ndata_dir: ../run/national-hubs")
    print("prices:                           # currency per unit; carbon price and waiting cost are assumptions")
    print("  currency: CNY\n  carbon_per_tonne: 80\n  transfer_per_gb: 0.14   # ESTIMATE, regions-notes.md 5.4\n  wait_per_gpu_hour: 2")
    print("regions:")
    for r in regions:
        n = notes[r["id"]]
        print(f"  - id: {r['id']}")
        print(f"    jurisdictions: [{', '.join(n['jurisdictions'])}]")
        print(f"    pue: {r['pue']}")
        print("    utc_offset_hours: 8   # the curves are China Standard Time")
        print(f"    price_per_kwh: [{', '.join(str(v) for v in r['price_per_kwh'])}]   # price {n['price']}, TOU {n['tou']}")
        print(f"    carbon_g_per_kwh: {r['carbon_g_per_kwh'][0]}   # grid factor (annual, flat)")
        print(f"    embodied_g_per_gpu_hour: {r['embodied_g_per_gpu_hour']}   # H100 164 kg / 5 years (assumption)")
        others = ", ".join(f"{k}: {v}" for k, v in sorted(rtt.get(r["id"], {}).items()))
        print(f"    rtt_ms: {{{others}}}   # ESTIMATES (network-cn-hubs.csv)")
        src = n["source"].replace('"', "'")
        print(f'    source: "{src}"')


if __name__ == "__main__":
    main()
