#!/usr/bin/env python3
"""Checks serve.py for real: starts it at each precision on a free port, asks it over HTTP, and
compares its answers with an independent computation of the same network (written here from
the model file's description, not from serve.py). Exit status 0 when every check passes.

    python3 examples/model/check_serve.py
"""
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def check(what, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(what)


def expected(model, x, int8):
    for layer in model["layers"]:
        w = layer["weights"]
        if int8:
            peak = max(abs(v) for row in w for v in row)
            scale = peak / 127
            w = [[scale * max(-127, min(127, round(v / scale))) for v in row] for row in w]
        x = [b + sum(a * c for a, c in zip(row, x)) for row, b in zip(w, layer["bias"])]
        if layer["activation"] == "relu":
            x = [max(0.0, v) for v in x]
        else:
            e = [math.exp(v - max(x)) for v in x]
            x = [v / sum(e) for v in e]
    return x


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def serve(model_file, precision, extra=None):
    port = free_port()
    env = dict(os.environ, GRID_PORT=str(port), GRID_PRECISION=precision, CUDA_VISIBLE_DEVICES="GPU-test", **(extra or {}))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), os.path.join(HERE, model_file)], env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    return p, port


def wait_ready(p, port, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline and p.poll() is None:
        try:
            if call(port, "/readyz")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def main():
    with open(os.path.join(HERE, "tiny-mlp-v1.json")) as f:
        model = json.load(f)
    inputs = [[5.1, 3.5, 1.4, 0.2, 1, 0, 0, 1], [6.7, 3.0, 5.2, 2.3, 0, 1, 1, 0], [-1, -2, 0.5, 4, 3, -3, 2, 1]]
    for precision, tolerance in (("fp32", 1e-9), ("fp16", 2e-3), ("int8", 1e-9)):
        p, port = serve("tiny-mlp-v1.json", precision)
        try:
            check(f"{precision}: ready on GRID_PORT", wait_ready(p, port))
            status, answer = call(port, "/v1/predict", json.dumps({"inputs": inputs}))
            check(f"{precision}: predict answers 200 with version v1 at {precision}",
                  status == 200 and answer.get("version") == "v1" and answer.get("precision") == precision, answer)
            for row, got in zip(inputs, answer.get("outputs", [])):
                exact = expected(model, row, int8=False)
                want = expected(model, row, int8=precision == "int8")
                check(f"{precision}: {row[:2]}… matches the independent computation within {tolerance}",
                      all(abs(a - b) <= tolerance for a, b in zip(got, want)), (got, want))
                check(f"{precision}: same class as fp32", got.index(max(got)) == exact.index(max(exact)), (got, exact))
                if precision == "int8":
                    check("int8: quantisation changes the answer a little", any(abs(a - b) > 1e-6 for a, b in zip(got, exact)), got)
            status, answer = call(port, "/v1/predict", json.dumps({"inputs": [[1, 2]]}))
            check(f"{precision}: a malformed request is a 400 naming the shape", status == 400 and "rows of 8 numbers" in answer.get("error", ""), answer)
            status, info = call(port, "/v1/info")
            check(f"{precision}: it reports the visible devices it was given",
                  info.get("visible_devices", {}).get("CUDA_VISIBLE_DEVICES") == "GPU-test", info)
            if precision == "fp32":
                check("healthz is 200 while it serves", call(port, "/healthz")[0] == 200)
                call(port, "/admin/fail", "")
                check("after /admin/fail healthz is 500", call(port, "/healthz")[0] == 500)
        finally:
            p.terminate()
            code = p.wait(10)
            check(f"{precision}: SIGTERM stops it with status 0", code == 0, code)
    p, port = serve("tiny-mlp-v1.json", "fp32", {"GRID_READY_DELAY_S": "1"})
    try:
        time.sleep(0.3)
        early = call(port, "/readyz")[0] if p.poll() is None else None
        check("readyz is 503 until GRID_READY_DELAY_S has passed, then 200", early == 503 and wait_ready(p, port), early)
    finally:
        p.terminate()
        p.wait(10)
    p, _ = serve("tiny-mlp-v3-broken.json", "fp32")
    code, err = p.wait(10), p.stderr.read().decode()
    check("a broken model file is refused at start (status 2, naming the layer)", code == 2 and "layers[1] is 2x16" in err, (code, err))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), os.path.join(HERE, "tiny-mlp-v1.json")],
                         env=dict(os.environ, GRID_PORT="99999"), stderr=subprocess.PIPE)
    code, err = p.wait(10), p.stderr.read().decode()
    check("a bad GRID_PORT is refused (status 2)", code == 2 and "GRID_PORT must be a port number" in err, (code, err))
    print(f"\n{'all checks passed' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
