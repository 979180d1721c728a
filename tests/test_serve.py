"""headstart serve: the model behind HTTP on the loopback address, as clients use it."""

from __future__ import annotations

import copy
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

import headstart
from headstart.runfolder import RunFolder
from headstart.serve import Limits, create_app, serve

LIMITS = Limits(max_body_bytes=2**20, max_pixels=1_000_000)


class SlowModel:
    """``model``, a second slower per batch: requests stay in flight long enough to watch."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def probabilities(self, pixels, batch_size=32):
        time.sleep(1.0)
        return self.model.probabilities(pixels, batch_size)


class Server:
    """A server of ``model`` in a thread of this process, on a free loopback port."""

    def __init__(self, model):
        app = create_app(model, max_batch=8, limits=LIMITS)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        while not self.uvicorn.started:
            assert self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def server(fitted):
    running = Server(fitted.model)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def photos(fitted) -> list[Path]:
    return [path for path, _, split in RunFolder(fitted.run_dir).splits if split == "val"]


def jpeg(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def multipart(files: dict[str, bytes]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_health_and_metadata_describe_the_model(server, fitted):
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    status, metadata = server.request("GET", "/metadata")
    assert status == 200 and metadata["classes"] == list(fitted.model.classes)
    assert metadata["preprocessing"] == fitted.model.preprocessing.to_dict()
    assert metadata["temperature"] == fitted.model.temperature
    assert metadata["limits"]["max_pixels"] == LIMITS.max_pixels
    assert metadata["modality"] == "image"


def test_an_image_in_the_body_is_predicted_as_in_process(server, fitted, photos):
    status, answer = server.request("POST", "/predict?top_k=2", photos[0].read_bytes())
    (prediction,) = answer["predictions"]
    (expected,) = fitted.model.predict([photos[0]], top_k=2)
    assert status == 200 and prediction["label"] == expected.label
    assert prediction["probability"] == pytest.approx(expected.probability, abs=1e-6)
    assert [t["label"] for t in prediction["top"]] == [label for label, _ in expected.top]


def test_several_images_in_a_multipart_form(server, fitted, photos):
    files = {path.name: path.read_bytes() for path in photos[:3]}
    status, answer = server.request("POST", "/predict", *multipart(files))
    assert status == 200
    assert [p["file"] for p in answer["predictions"]] == list(files)
    expected = [p.label for p in fitted.model.predict(photos[:3])]
    assert [p["label"] for p in answer["predictions"]] == expected


@pytest.mark.parametrize(
    "requests, clients", [(40, 16), pytest.param(200, 20, marks=pytest.mark.slow)]
)
def test_requests_from_concurrent_clients_are_all_answered_in_batches(
    server, fitted, photos, tmp_path, requests, clients
):
    files = [tmp_path / f"{i}.jpg" for i in range(requests)]
    for i, file in enumerate(files):
        file.write_bytes(jpeg(photos[i % len(photos)]))
    bodies = [file.read_bytes() for file in files]
    expected = [p.label for p in fitted.model.predict(files)]
    before = server.request("GET", "/metadata")[1]["batches"]
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda body: server.request("POST", "/predict", body), bodies))
    assert [status for status, _ in answers] == [200] * requests
    assert [answer["predictions"][0]["label"] for _, answer in answers] == expected
    after = server.request("GET", "/metadata")[1]["batches"]
    assert after["images"] - before["images"] == requests
    assert after["run"] - before["run"] < requests  # concurrent requests shared batches


def _ppm() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PPM")
    return out.getvalue()


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "headers", "path", "status", "said"),
    [
        (b"", {}, "/predict", 400, "empty body"),
        (b"plain text, not an image", {}, "/predict", 400, "not an image"),
        ("truncated", {}, "/predict", 400, "the body"),
        (b"x" * (2**20 + 1), {}, "/predict", 413, "over this server's limit"),
        (_png(1200, 1000), {}, "/predict", 413, "1200 x 1000 pixels"),
        ("photo", {}, "/predict?top_k=none", 400, "top_k='none'"),
        ("photo", {}, "/predict?top_k=%C2%B2", 400, "top_k='²'"),
        (_ppm(), {}, "/predict", 415, "PPM images are not accepted here"),
        (
            b"--x\r\nnot a part",
            {"Content-Type": "multipart/form-data; boundary=y"},
            "/predict",
            400,
            "",
        ),
        (
            b"--b\r\nContent-Disposition: form-data; name=note\r\n\r\nhello\r\n--b--\r\n",
            {"Content-Type": "multipart/form-data; boundary=b"},
            "/predict",
            400,
            "no file",
        ),
    ],
    ids=[
        "empty",
        "not an image",
        "corrupt JPEG",
        "too large",
        "too many pixels",
        "bad top_k",
        "a superscript top_k",
        "a format the server does not take",
        "malformed form",
        "form without files",
    ],
)
def test_bad_input_gets_a_4xx_and_a_message(server, photos, body, headers, path, status, said):
    if body == "truncated":
        whole = jpeg(photos[0])
        body = whole[: len(whole) // 3]
    elif body == "photo":
        body = photos[0].read_bytes()
    answered, answer = server.request("POST", path, body, headers)
    assert answered == status and said in answer["error"]
    assert server.request("GET", "/health")[0] == 200  # and the server goes on


def test_a_shutdown_answers_the_requests_it_holds(fitted, photos):
    server = Server(SlowModel(fitted.model))
    connections = [server.connect() for _ in range(8)]
    for connection, path in zip(connections, photos, strict=False):
        connection.request("POST", "/predict", body=path.read_bytes())
    deadline = time.monotonic() + 60
    while len(server.uvicorn.server_state.tasks) < 8:  # every request read, none answered
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.uvicorn.should_exit = True  # as SIGTERM does
    statuses = [connection.getresponse().status for connection in connections]
    server.thread.join(timeout=60)
    assert statuses == [200] * 8 and not server.thread.is_alive()


def test_the_command_serves_until_sigterm(fitted, photos):
    with socket.socket() as probe:  # a free port for the child
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "headstart", "serve", str(fitted.run_dir), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("POST", "/predict", body=photos[0].read_bytes())
                break
            except ConnectionRefusedError:
                if child.poll() is not None or time.monotonic() > deadline:
                    child.kill()
                    pytest.fail(f"the server did not answer: {child.stderr.read()}")
                time.sleep(0.2)
        assert connection.getresponse().status == 200
        child.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then ends by the signal it caught, as the caller expects.
        assert child.wait(timeout=60) == -signal.SIGTERM
        assert "every request answered (images predicted: 1)" in child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()


# --- A text model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_model(text_probe_run):
    return headstart.load(text_probe_run.run_dir)


@pytest.fixture(scope="module")
def text_server(text_model):
    running = Server(text_model)
    yield running
    running.stop()


JSON = {"Content-Type": "application/json"}
FORECAST, RECIPE = "Light rain will spread from the west", "Stir the risotto until it is creamy"


def test_a_text_as_the_body_is_predicted_as_in_process(text_server, text_model):
    body = f"\ufeff {FORECAST}\n".encode()  # a byte-order mark and spaces, as files have them
    status, answer = text_server.request("POST", "/predict?top_k=2", body)
    (prediction,) = answer["predictions"]
    (expected,) = text_model.predict([FORECAST], top_k=2)
    assert status == 200 and prediction["label"] == expected.label == "weather"
    assert prediction["probability"] == pytest.approx(expected.probability, abs=1e-6)
    assert [t["label"] for t in prediction["top"]] == [label for label, _ in expected.top]


def test_texts_as_json_are_answered_in_their_order(text_server):
    body = json.dumps({"texts": [RECIPE, FORECAST, " Snow is expected in the hills "]})
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, answer = text_server.request("POST", "/predict?top_k=2", body.encode(), headers)
    assert status == 200
    assert [p["label"] for p in answer["predictions"]] == ["cooking", "weather", "weather"]
    assert all(len(p["top"]) == 2 and "file" not in p for p in answer["predictions"])


def test_concurrent_texts_share_batches_and_each_gets_its_own_answer(text_server, text_model):
    texts = [FORECAST, RECIPE, "Snow is expected in the hills", "Whisk the cream until stiff"] * 4
    before = text_server.request("GET", "/metadata")[1]["batches"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda text: text_server.request("POST", "/predict", text.encode()), texts)
        )
    assert [status for status, _ in answers] == [200] * 16
    assert [a["predictions"][0]["label"] for _, a in answers] == ["weather", "cooking"] * 8
    after = text_server.request("GET", "/metadata")[1]["batches"]
    assert after["texts"] - before["texts"] == 16
    assert after["run"] - before["run"] < 16  # concurrent requests shared batches


def test_text_metadata_names_the_encoder_and_what_it_reads(text_server, text_model):
    status, metadata = text_server.request("GET", "/metadata")
    assert status == 200 and metadata["modality"] == "text"
    assert metadata["classes"] == list(text_model.classes)
    assert metadata["encoder"] == "all-MiniLM-L6-v2" and metadata["fine_tuned"] is False
    assert metadata["max_tokens"] == text_model.encoder.max_tokens
    assert metadata["limits"]["max_texts"] == 256


def test_a_fine_tuned_encoder_is_named_without_the_servers_paths(text_model):
    fine_tuned = copy.copy(text_model)
    fine_tuned.fine_tuned = True  # as a bundle holding its encoder loads
    server = Server(fine_tuned)
    try:
        metadata = server.request("GET", "/metadata")[1]
    finally:
        server.stop()
    assert metadata["encoder"] == "fine-tuned, in the bundle" and metadata["fine_tuned"]


class FailsOn:
    """``model``, failing on one text; a first text that waits keeps the others queued."""

    def __init__(self, model, bad: str):
        self.model, self.bad = model, bad

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict_proba(self, texts):
        if "wait" in texts:
            time.sleep(1.0)
        if self.bad in texts:
            raise RuntimeError(f"cannot take {self.bad!r}")
        return self.model.predict_proba(texts)


def test_a_text_the_model_fails_on_fails_only_its_own_request(text_model):
    server = Server(FailsOn(text_model, "bad"))
    try:
        with ThreadPoolExecutor(6) as pool:
            waiting = pool.submit(server.request, "POST", "/predict", b"wait")
            time.sleep(0.3)  # the rest arrive while "wait" is predicted: one batch
            texts = [FORECAST, "bad", RECIPE, FORECAST]
            answers = list(
                pool.map(lambda t: server.request("POST", "/predict", t.encode()), texts)
            )
        assert waiting.result()[0] == 200
        assert [status for status, _ in answers] == [200, 500, 200, 200]
        assert answers[1][1]["error"].startswith("the model failed on this input (RuntimeError)")
        labels = [a["predictions"][0]["label"] for status, a in answers if status == 200]
        assert labels == ["weather", "cooking", "weather"]
    finally:
        server.stop()


def test_the_command_serves_a_text_run(text_probe_run, monkeypatch):
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    serve(text_probe_run.run_dir, port=8123)
    assert served["port"] == 8123 and served["app"] is not None


@pytest.mark.parametrize(
    ("body", "headers", "status", "said"),
    [
        (b"", {}, 400, "empty body"),
        (b" \n\t", {}, 400, "empty body"),
        (b"caf\xe9 au lait", {}, 400, "not UTF-8 text"),
        (b'{"texts": ["rain"', JSON, 400, "not JSON"),
        (b"[" * 100_000, JSON, 400, "not JSON"),
        (b'{"texts": ["rain"], "n": ' + b"9" * 5000 + b"}", JSON, 400, "not JSON"),
        (b'{"text": "rain"}', JSON, 400, 'send JSON {"texts"'),
        (b'{"texts": []}', JSON, 400, "one text or more"),
        (b'{"texts": ["rain", 3]}', JSON, 400, "text 1 is a number, not a string"),
        (b'{"texts": [null]}', JSON, 400, "text 0 is null"),
        (b'{"texts": ["rain", " "]}', JSON, 400, "text 1 is empty"),
        (b'{"texts": ["ok \\ud800 not"]}', JSON, 400, "text 0 holds a lone surrogate"),
        (json.dumps({"texts": ["rain"] * 257}).encode(), JSON, 413, "limit of 256"),
        (b'{"texts": ["rain"]}', {}, 415, "Content-Type: application/json"),
        (b"x" * (2**20 + 1), {}, 413, "over this server's limit"),
        (
            b"--b\r\nContent-Disposition: form-data; name=t\r\n\r\nrain\r\n--b--\r\n",
            {"Content-Type": "multipart/form-data; boundary=b"},
            415,
            "a text as the body",
        ),
        (FORECAST.encode(), {}, 400, "top_k"),
    ],
    ids=[
        "empty",
        "blank",
        "not UTF-8",
        "malformed JSON",
        "JSON nested too deep",
        "a number too long",
        "JSON without texts",
        "no texts",
        "a number",
        "a null",
        "a blank text",
        "a lone surrogate",
        "too many texts",
        "JSON sent as a text",
        "too large",
        "a form",
        "bad top_k",
    ],
)
def test_bad_text_requests_get_a_4xx_and_a_message(text_server, body, headers, status, said):
    path = "/predict?top_k=0" if said == "top_k" else "/predict"
    answered, answer = text_server.request("POST", path, body, headers)
    assert answered == status and said in answer["error"]
    assert text_server.request("GET", "/health")[0] == 200
