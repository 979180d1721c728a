"""The prediction server under load, beside ``predict`` in the same process.

``headstart serve`` runs a trained model in a child process on the loopback address; 20
clients send 200 requests (one JPEG each, or for a text model one text each, the body of a
``POST /predict``) as fast as the answers come. Printed: requests per second, latency p50/p99,
how many inputs the server's batches held on average, and the in-process throughput of the
model's own prediction (``predict_files`` on the same 200 files, or ``predict`` on the same 200
texts) with the model already loaded. The issue's bar: every request answered, and the server
at no less than 0.8x the in-process throughput.

Usage: python benchmarks/serve_load.py RUN INPUTS [--requests 200] [--clients 20]
(``RUN``: a run folder, a bundle or an ONNX export; ``INPUTS``: for an image model a folder of
photos, searched recursively, e.g. the test/ folder of one of ../shared/data's sets; for a
text model a table or text file, e.g. ../shared/data/text/trec6/test.csv.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

import headstart
from headstart.data.images import IMAGE_EXTENSIONS
from headstart.text.data import texts_to_predict


def jpegs(folder: Path, count: int, into: Path) -> list[Path]:
    """``count`` JPEGs of the photos under ``folder`` (again from the start if too few)."""
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    files = []
    for i in range(count):
        target = into / f"{i:04d}.jpg"
        Image.open(photos[i % len(photos)]).convert("RGB").save(target, quality=90)
        files.append(target)
    return files


def texts(source: Path, count: int) -> list[str]:
    """``count`` texts of ``source`` (a table's text column, or a file's lines), from the
    start again if too few."""
    found = [text for _, text in texts_to_predict([str(source)])]
    return [found[i % len(found)] for i in range(count)]


def predicted_labels(model, inputs: list) -> list[str]:
    """The model's own labels of ``inputs``, in process: ``predict`` for texts,
    ``predict_files`` for image files."""
    if getattr(model, "modality", "image") == "text":
        return [prediction.label for prediction in model.predict(inputs)]
    predictions, skipped = model.predict_files(inputs, quiet=True)
    assert not skipped
    return [prediction.label for _, prediction in predictions]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read(), time.perf_counter() - started
    finally:
        connection.close()


def wait_until_up(port: int, child: subprocess.Popen) -> None:
    while True:
        try:
            if request(port, "GET", "/health")[0] == 200:
                return
        except ConnectionRefusedError:
            if child.poll() is not None:
                sys.exit(f"the server ended: {child.stderr.read()}")
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = headstart.load(args.run)
        text = getattr(model, "modality", "image") == "text"
        noun, peer = ("texts", "predict") if text else ("images", "predict_files")
        if text:
            inputs = texts(args.inputs, args.requests)
            bodies = [line.encode() for line in inputs]
        else:
            inputs = jpegs(args.inputs, args.requests, Path(scratch))
            bodies = [file.read_bytes() for file in inputs]
        predicted_labels(model, inputs[:8])  # warm
        started = time.perf_counter()
        expected = predicted_labels(model, inputs)
        in_process = len(inputs) / (time.perf_counter() - started)
        del model

        port = free_port()
        command = ["headstart", "serve", str(args.run), "--port", str(port)]
        child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ)
        try:
            wait_until_up(port, child)
            request(port, "POST", "/predict", bodies[0])  # warm
            before = json.loads(request(port, "GET", "/metadata")[1])["batches"]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as clients:
                answers = list(clients.map(lambda b: request(port, "POST", "/predict", b), bodies))
            seconds = time.perf_counter() - started
            after = json.loads(request(port, "GET", "/metadata")[1])["batches"]
        finally:
            child.terminate()
            child.wait(timeout=60)

    failed = [status for status, _, _ in answers if status != 200]
    labels = [json.loads(body)["predictions"][0]["label"] for status, body, _ in answers]
    agree = sum(a == e for a, e in zip(labels, expected, strict=True))
    latencies = sorted(latency for _, _, latency in answers)
    served = len(answers) / seconds
    batches = after["run"] - before["run"]
    print(f"{args.requests} requests from {args.clients} clients, {os.cpu_count()} cores")
    print(f"  served:     {served:6.1f} {noun}/s   ({len(failed)} failed)")
    print(f"  in process: {in_process:6.1f} {noun}/s   ({peer}, model loaded)")
    print(f"  ratio:      {served / in_process:6.2f}x  (bar: 0.8x)")
    print(
        f"  latency:    p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms"
    )
    print(f"  batches:    {batches}, {(after[noun] - before[noun]) / batches:.1f} {noun} each")
    print(f"  labels:     {agree} of {len(labels)} as predict gives them")


if __name__ == "__main__":
    main()
