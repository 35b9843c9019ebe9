#!/usr/bin/env python3
"""Offline optimum of a national scenario (issue 10's JSON format) by MILP (scipy's HiGHS), to
measure how far `grid-bench national` is from the best possible plan. Knows every job in
advance (the scheduler does not), so it is a lower bound on the online total.

    python3 bench/milp_optimum.py bench/scenarios/cn-hubs-300.json [--time-limit 300] [--decisions-out FILE]

`--decisions-out` writes the plan as `grid-bench national --decisions-out` does
(`{"job_id": ["region", start_hour] or null}`), to compare the two job by job.

Same cost model as Sources/GridScheduler/RegionChoice.swift: energy (kWh x PUE x hourly price),
carbon price x (operational + embodied), transfer when the region is not the job's origin,
waiting per GPU-hour of delay after release, and 100 per unplaced GPU-hour. Hard constraints:
jurisdiction, latency SLO from the origin, the job's window, free GPUs per region and hour.
"""
import argparse, json, sys, time
import numpy as np
from scipy.optimize import milp, LinearConstraint, Bounds
from scipy.sparse import lil_matrix


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--time-limit", type=float, default=300)
    ap.add_argument("--decisions-out")
    args = ap.parse_args()
    s = json.load(open(args.scenario))
    H = s["hours"]
    regions = s["regions"]
    rtt = s["rtt_ms"]

    def rtt_of(a, b):
        if a == b:
            return 0.0
        return rtt.get(a, {}).get(b, rtt.get(b, {}).get(a))

    cols, costs = [], []  # (job index, region index, start)
    for ji, j in enumerate(s["jobs"]):
        for ri, r in enumerate(regions):
            if j["allowed_jurisdictions"] and r["jurisdiction"] not in j["allowed_jurisdictions"]:
                continue
            slo = j.get("latency_slo_ms")
            d = rtt_of(j["origin"], r["id"])
            if slo is not None and (d is None or d > slo):
                continue
            for st in range(j["release_hour"], j["deadline_hour"] - j["hours"] + 1):
                if any(r["free_gpus"][h] < j["gpus"] if h < len(r["free_gpus"]) else True for h in range(st, st + j["hours"])):
                    continue
                kwh = j["gpus"] * j["kw_per_gpu"] * r["pue"]
                energy = sum(kwh * r["price_per_kwh"][h % len(r["price_per_kwh"])] for h in range(st, st + j["hours"]))
                op = sum(kwh * r["carbon_g_per_kwh"][h % len(r["carbon_g_per_kwh"])] for h in range(st, st + j["hours"]))
                emb = j["gpus"] * j["hours"] * r["embodied_g_per_gpu_hour"]
                carbon = (op + emb) / 1e6 * s["carbon_price_per_tonne"]
                transfer = 0.0 if r["id"] == j["origin"] else j["data_gb"] * s["transfer_price_per_gb"]
                wait = (st - j["release_hour"]) * j["gpus"] * s["wait_cost_per_gpu_hour"]
                cols.append((ji, ri, st))
                # Placing saves the unplaced penalty of its GPU-hours.
                costs.append(energy + carbon + transfer + wait - 100.0 * j["gpus"] * j["hours"])
    n = len(cols)
    jobs = len(s["jobs"])
    rows_job = lil_matrix((jobs, n))
    rows_cap = lil_matrix((len(regions) * H, n))
    for k, (ji, ri, st) in enumerate(cols):
        rows_job[ji, k] = 1
        g = s["jobs"][ji]["gpus"]
        for h in range(st, st + s["jobs"][ji]["hours"]):
            rows_cap[ri * H + h, k] = g
    cap = np.array([regions[ri]["free_gpus"][h] if h < len(regions[ri]["free_gpus"]) else 0 for ri in range(len(regions)) for h in range(H)])
    t0 = time.time()
    res = milp(c=np.array(costs), integrality=np.ones(n), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(rows_job.tocsr(), -np.inf, 1), LinearConstraint(rows_cap.tocsr(), -np.inf, cap)],
               options={"time_limit": args.time_limit, "disp": False})
    if res.x is None:
        print(f"no solution: {res.message}", file=sys.stderr)
        sys.exit(1)
    penalty_all = sum(100.0 * j["gpus"] * j["hours"] for j in s["jobs"])
    total = res.fun + penalty_all
    placed = sum(s["jobs"][cols[k][0]]["gpus"] * s["jobs"][cols[k][0]]["hours"] for k in range(n) if res.x[k] > 0.5)
    all_gpuh = sum(j["gpus"] * j["hours"] for j in s["jobs"])
    bound = getattr(res, "mip_dual_bound", None)
    if args.decisions_out:
        plan = {j["id"]: None for j in s["jobs"]}
        for k in range(n):
            if res.x[k] > 0.5:
                ji, ri, st = cols[k]
                plan[s["jobs"][ji]["id"]] = [regions[ri]["id"], st]
        with open(args.decisions_out, "w") as f:
            json.dump(plan, f, indent=1, sort_keys=True)
    print(f"MILP optimum: total {total:.1f} (GPU-h placed {placed}, unplaced {all_gpuh - placed}); "
          f"{n} variables, {time.time() - t0:.1f} s, status: {res.message}"
          + (f"; dual bound {bound + penalty_all:.1f}" if bound is not None else ""))


if __name__ == "__main__":
    main()
