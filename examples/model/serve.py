#!/usr/bin/env python3
"""Serves the tiny model (make_model.py) over HTTP the way a ComputeGrid service replica runs:
the agent gives it a port (GRID_PORT), its devices (the vendor's visible-devices variable) and
the precision the region chose (GRID_PRECISION). Python standard library only, on CPU here;
on a GPU host the same command runs with CUDA_VISIBLE_DEVICES set, which it reports.

    GRID_PORT=8080 GRID_MODEL_PATH=examples/model/tiny-mlp-v1.json python3 examples/model/serve.py

    GET  /healthz      200 while the process serves (a failure injected with /admin/fail: 500)
    GET  /readyz       200 once the model is loaded (and GRID_READY_DELAY_S has passed), else 503
    GET  /v1/info      model, version, precision, visible devices, requests served
    POST /v1/predict   {"inputs": [[8 numbers], ...]} -> {"outputs": [[3 probabilities], ...],
                       "labels": [...], "model": ..., "version": ..., "precision": ...}
    POST /admin/fail   the health probe fails from now on (tests of a replica taken out of rotation)

Precisions: fp32 (as stored), fp16 (weights rounded to IEEE half), int8 (per-tensor symmetric
quantisation of the weights: scale = max|w| / 127, w ≈ scale · round(w / scale)). A model file
that does not hold together is refused at start with exit status 2 (a broken version never
becomes ready).
"""
import json
import math
import os
import signal
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRECISIONS = ("fp32", "fp16", "int8")
VISIBLE = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES",
           "HABANA_VISIBLE_MODULES", "ZE_AFFINITY_MASK")


def fail(message):
    sys.stderr.write(f"serve.py: {message}\n")
    sys.exit(2)


def quantise(w, precision):
    if precision == "fp32":
        return w
    if precision == "fp16":
        return [[struct.unpack("e", struct.pack("e", x))[0] for x in row] for row in w]
    peak = max((abs(x) for row in w for x in row), default=0.0)
    scale = peak / 127 if peak > 0 else 1.0
    return [[scale * max(-127, min(127, round(x / scale))) for x in row] for row in w]


class Model:
    def __init__(self, path, precision):
        try:
            with open(path) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            fail(f"cannot read model {path}: {e}")
        if m.get("format") != "computegrid-mlp-json/1":
            fail(f"{path}: format {m.get('format')!r} is not computegrid-mlp-json/1")
        width = m.get("inputs")
        self.layers = []
        for i, layer in enumerate(m.get("layers", [])):
            w, b = layer.get("weights", []), layer.get("bias", [])
            if not w or any(len(row) != width for row in w) or len(b) != len(w):
                fail(f"{path}: layers[{i}] is {len(w)}x{len(w[0]) if w else 0} with {len(b)} biases; expected rows of {width} and one bias per row")
            self.layers.append((quantise(w, precision), b, layer.get("activation", "relu")))
            width = len(w)
        if width != len(m.get("outputs", [])):
            fail(f"{path}: the last layer gives {width} outputs but {len(m.get('outputs', []))} labels are named")
        self.inputs = m["inputs"]
        self.labels = m["outputs"]
        self.name, self.version, self.precision = m.get("name", "?"), m.get("version", "?"), precision

    def predict(self, x):
        for w, b, activation in self.layers:
            x = [sum(wi * xi for wi, xi in zip(row, x)) + bi for row, bi in zip(w, b)]
            if activation == "relu":
                x = [max(0.0, v) for v in x]
            elif activation == "softmax":
                top = max(x)
                e = [math.exp(v - top) for v in x]
                s = sum(e)
                x = [v / s for v in e]
        return x


class State:
    failing = False
    served = 0
    lock = threading.Lock()


def main():
    port = os.environ.get("GRID_PORT", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"GRID_PORT must be a port number 1-65535 (the agent sets it); got {port!r}")
    precision = os.environ.get("GRID_PRECISION", "") or "fp32"
    if precision not in PRECISIONS:
        fail(f"GRID_PRECISION {precision!r} is not one of {', '.join(PRECISIONS)}")
    path = os.environ.get("GRID_MODEL_PATH") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not path:
        fail("name the model: GRID_MODEL_PATH or the first argument")
    model = Model(path, precision)
    ready_at = time.monotonic() + float(os.environ.get("GRID_READY_DELAY_S", "0") or 0)
    visible = {k: os.environ[k] for k in VISIBLE if k in os.environ}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per answer (headers and body together, flushed after the handler) and no
        # Nagle delay: otherwise a keep-alive client waits out its delayed ACK (~40 ms) per answer.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(500 if State.failing else 200, {"status": "failing" if State.failing else "ok"})
            elif self.path == "/readyz":
                ready = time.monotonic() >= ready_at
                self.reply(200 if ready else 503, {"ready": ready})
            elif self.path == "/v1/info":
                self.reply(200, {"model": model.name, "version": model.version, "precision": model.precision,
                                 "visible_devices": visible, "served": State.served, "pid": os.getpid()})
            else:
                self.reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path == "/admin/fail":
                State.failing = True
                self.reply(200, {"status": "failing"})
                return
            if self.path != "/v1/predict":
                self.reply(404, {"error": f"no route {self.path}"})
                return
            try:
                rows = json.loads(raw or b"{}").get("inputs")
                if not isinstance(rows, list) or not rows or any(
                        not isinstance(r, list) or len(r) != model.inputs or not all(isinstance(v, (int, float)) for v in r) for r in rows):
                    raise ValueError(f"inputs: a list of rows of {model.inputs} numbers")
            except (ValueError, AttributeError) as e:
                self.reply(400, {"error": str(e)})
                return
            outputs = [model.predict([float(v) for v in r]) for r in rows]
            with State.lock:
                State.served += 1
            self.reply(200, {"outputs": outputs, "labels": model.labels, "model": model.name, "version": model.version,
                             "precision": model.precision})

    # GRID_HOST: the address to listen on (the agent's advertised address on a real host); loopback by default.
    server = ThreadingHTTPServer((os.environ.get("GRID_HOST") or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    # SIGTERM (the agent stopping the replica): finish what is in flight, then exit 0. A parent
    # may have left the signal blocked (the mask survives exec): unblock it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    sys.stderr.write(f"serve.py: {model.name} {model.version} ({precision}) on port {port}; visible devices {visible or 'none'}\n")
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
