#!/usr/bin/env python3
"""Writes the tiny model the serving demo and tests deploy (issue "Model deployment as a
service", item 7): a two-layer perceptron (8 inputs, 16 hidden ReLU units, 3 outputs) as JSON,
a few KB, with deterministic weights, so deploy -> request -> answer is real on any CPU.

    python3 examples/model/make_model.py      # writes tiny-mlp-v1.json, -v2.json, -v3-broken.json

The files are generated once and committed; CI never runs this. v2 has other weights (a
rolling update must end with v2's answers); v3-broken is a file serve.py refuses to load (a
rollout to it must roll back).
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def weights(seed, rows, cols, scale):
    """A 64-bit linear congruential generator (Knuth's MMIX constants): same numbers everywhere."""
    state = seed
    out = []
    for _ in range(rows):
        row = []
        for _ in range(cols):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            row.append(round(((state >> 11) / float(1 << 53) * 2 - 1) * scale, 6))
        out.append(row)
    return out


def model(version, seed):
    return {
        "format": "computegrid-mlp-json/1",
        "name": "tiny-mlp",
        "version": version,
        "parameters": 8 * 16 + 16 + 16 * 3 + 3,
        "inputs": 8,
        "outputs": ["setosa", "versicolor", "virginica"],
        "layers": [
            {"weights": weights(seed, 16, 8, 0.5), "bias": weights(seed + 1, 1, 16, 0.1)[0], "activation": "relu"},
            {"weights": weights(seed + 2, 3, 16, 0.5), "bias": weights(seed + 3, 1, 3, 0.1)[0], "activation": "softmax"},
        ],
    }


def main():
    for name, m in [("tiny-mlp-v1.json", model("v1", 1)), ("tiny-mlp-v2.json", model("v2", 2))]:
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(m, f, separators=(",", ":"))
            f.write("\n")
    broken = model("v3", 3)
    broken["layers"][1]["weights"] = broken["layers"][1]["weights"][:2]  # 2 rows for 3 outputs: refused at load
    with open(os.path.join(HERE, "tiny-mlp-v3-broken.json"), "w") as f:
        json.dump(broken, f, separators=(",", ":"))
        f.write("\n")
    print("wrote tiny-mlp-v1.json tiny-mlp-v2.json tiny-mlp-v3-broken.json")


if __name__ == "__main__":
    main()
