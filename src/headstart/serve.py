"""``headstart serve``: a trained model behind HTTP, on Starlette and uvicorn.

- ``POST /predict``: for an image model, one image's bytes as the request body, or several as
  the files of a ``multipart/form-data`` form; for a text model, the body as one text (UTF-8),
  or up to 256 as JSON, ``{"texts": [...]}`` with ``Content-Type: application/json``.
  ``?top_k=3`` for the three most likely labels. The server never opens a path or a URL a
  client names: it reads only what it is sent.
- ``GET /health``: ``{"status": "ok"}`` while the model is loaded and answering.
- ``GET /metadata``: classes, what the model reads (preprocessing, or the encoder), runtime,
  calibration, version and limits.

Concurrent requests are predicted together (micro-batching): while the network works on
one batch, the inputs that arrive wait, and the next batch takes all of them (up to
``max_batch``), so a busy server runs the network on full batches and an idle one answers at
once, without a timer; an input the model fails on fails its own request only. Images are
decoded in worker threads, by the very code ``predict`` uses (EXIF rotation, colour modes,
16-bit, bombs refused). Bad input gets a 4xx with a message: a body or a part over
``max_body_bytes`` (413), an image over ``max_pixels`` or more than 256 texts (413), bytes
that are not a usable image or text, or JSON that is not a list of texts (400, with the
reason), a form sent to a text model or JSON without its header (415), a bad ``top_k`` (400).
On SIGINT or SIGTERM, uvicorn stops accepting connections and answers the requests it holds
before it exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ._version import __version__
from .console import say
from .data.images import IMAGE_EXTENSIONS, UnreadableImage, stack_shape
from .errors import HeadstartError
from .prediction import Predictor, ranked

if TYPE_CHECKING:
    from starlette.requests import Request

    from .text.predictor import TextPredictor

__all__ = ["Limits", "MicroBatcher", "create_app", "serve"]

_log = logging.getLogger("headstart.serve")

#: Images one request may hold (multipart files).
MAX_FILES = 64
#: Connections served at once; beyond, uvicorn answers 503 (each may hold a body in memory).
MAX_CONNECTIONS = 64
#: Texts one request may hold (a JSON list): each is encoded on its own row of a batch.
MAX_TEXTS = 256
#: How a text model's request is sent, as its refusals say.
_TEXT_BODY = 'a text as the body, or JSON {"texts": [...]} (Content-Type: application/json)'
#: What a JSON value that is not a string is, in JSON's words.
_JSON_TYPES = {
    type(None): "null, not a string",
    bool: "a boolean, not a string",
    int: "a number, not a string",
    float: "a number, not a string",
    list: "an array, not a string",
    dict: "an object, not a string",
}
#: The photo formats a client may send. Pillow opens more (EPS would run Ghostscript, a
#: program the server should not expose to the network): those are refused before decoding.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")


class Limits:
    """What one request may hold."""

    def __init__(self, max_body_bytes: int = 20 * 2**20, max_pixels: int = 40_000_000):
        if max_body_bytes < 1 or max_pixels < 1:
            raise HeadstartError("the request limits must be positive")
        self.max_body_bytes, self.max_pixels = max_body_bytes, max_pixels

    def to_dict(self) -> dict:
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_pixels": self.max_pixels,
            "max_files": MAX_FILES,
        }


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class MicroBatcher:
    """Inputs of concurrent requests (decoded images, or texts), predicted together in one
    worker thread: ``predict_rows`` maps a list of inputs to their class probabilities."""

    def __init__(self, predict_rows: Callable[[list], np.ndarray], max_batch: int = 32):
        self.predict_rows, self.max_batch = predict_rows, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="headstart-predict")
        self.batches = self.inputs = 0  # how much batching happened: /metadata says

    async def probabilities(self, item) -> np.ndarray:
        """The class probabilities of one input, once its batch has run."""
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((item, done))
        return await done

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                rows = await self._predict([item for item, _ in batch])
            except Exception as error:  # the loop goes on, and the request(s) hear of it
                if len(batch) == 1:
                    _settle(batch[0][1], error=error)
                    continue
                # One input the model cannot take must not fail the others it was batched
                # with: each is predicted alone, and only its own request hears of its error.
                for item, done in batch:
                    try:
                        (row,) = await self._predict([item])
                    except Exception as alone:
                        _settle(done, error=alone)
                    else:
                        _settle(done, row)
                continue
            for row, (_, done) in zip(rows, batch, strict=True):
                _settle(done, row)

    async def _predict(self, items: list) -> np.ndarray:
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self.worker, self.predict_rows, items)
        if len(rows) != len(items):
            raise RuntimeError(f"the model answered {len(rows)} rows for {len(items)} inputs")
        self.batches, self.inputs = self.batches + 1, self.inputs + len(items)
        return rows


class ImageRequests:
    """How an image model's requests are read: an image's bytes as the body, or images as the
    files of a multipart form, each decoded (in a pool of threads) as ``predict`` decodes a
    file."""

    noun = "images"

    def __init__(self, model: Predictor, limits: Limits, max_batch: int):
        self.model, self.limits, self.max_batch = model, limits, max_batch
        self.decoders = ThreadPoolExecutor(
            os.cpu_count() or 1, thread_name_prefix="headstart-decode"
        )
        self.scratch = tempfile.TemporaryDirectory(prefix="headstart-serve-")
        self.decoder = model.inputs.decoder()

    def predict_rows(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self.model.probabilities(pixels, self.max_batch)

    def describe(self) -> dict:
        return {
            "modality": "image",
            "architecture": self.model.architecture,
            "runtime": getattr(self.model, "runtime", "pytorch"),
            "preprocessing": self.model.preprocessing.to_dict(),
            "test_time_flip": self.model.test_time_flip,
            "test_time_crops": list(self.model.test_time_crops),
            "limits": self.limits.to_dict(),
        }

    async def read(self, request: Request, body: bytes) -> list[tuple[str | None, np.ndarray]]:
        """Each upload's name (None for a body) and its decoded pixels."""
        uploads = await self._uploads(request, body)
        loop = asyncio.get_running_loop()
        pixels = await asyncio.gather(
            *(
                loop.run_in_executor(self.decoders, self._decode, data, name)
                for name, data in uploads
            )
        )
        return [(name, image) for (name, _), image in zip(uploads, pixels, strict=True)]

    def close(self) -> None:
        self.decoders.shutdown(wait=True)
        self.scratch.cleanup()

    async def _uploads(self, request: Request, body: bytes) -> list[tuple[str | None, bytes]]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            if not body:
                raise BadRequest(400, "empty body: send an image's bytes, or a multipart form")
            return [(None, body)]

        from starlette.requests import Request

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            async with Request(request.scope, replay).form(
                max_files=MAX_FILES, max_part_size=self.limits.max_body_bytes
            ) as form:
                files = [
                    (value.filename or key, await value.read())
                    for key, value in form.multi_items()
                    if not isinstance(value, str)
                ]
        except Exception as error:  # the form parser's errors: a malformed form
            raise BadRequest(400, f"cannot read the multipart form: {error}") from None
        if not files:
            raise BadRequest(400, "the form holds no file: send images as its file parts")
        return files

    def _decode(self, body: bytes, name: str | None) -> np.ndarray:
        """Pixels of an uploaded image, through the decoder ``predict`` uses on files, once
        its header says it is a photo format this server takes (or a stack of channels)
        within the pixel limit."""
        what = name or "the body"
        suffix = Path(name or "").suffix.lower()
        handle, file = tempfile.mkstemp(
            suffix if suffix in IMAGE_EXTENSIONS else ".img", dir=self.scratch.name
        )
        try:
            with os.fdopen(handle, "wb") as opened:
                opened.write(body)
            width, height = _size(Path(file), what)
            if width * height > self.limits.max_pixels:
                raise BadRequest(
                    413,
                    f"{what}: {width} x {height} pixels, over this server's limit of "
                    f"{self.limits.max_pixels:,}",
                )
            return self.model.inputs.pixels(Path(file), self.decoder)
        except UnreadableImage as error:
            raise BadRequest(400, f"{what}: {error.reason}") from None
        except OSError as error:  # the server's own disk, not the client's image
            raise BadRequest(503, f"cannot hold the upload now ({error.strerror})") from None
        finally:
            os.unlink(file)


class TextRequests:
    """How a text model's requests are read: the body as one text (UTF-8), or up to
    :data:`MAX_TEXTS` as JSON, ``{"texts": [...]}`` (``Content-Type: application/json``). A
    text longer than the encoder reads is cut, as ``predict`` cuts it (``max_tokens`` in
    ``/metadata``)."""

    noun = "texts"

    def __init__(self, model: TextPredictor, limits: Limits):
        self.model, self.limits = model, limits

    def predict_rows(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(texts)

    def describe(self) -> dict:
        return {
            "modality": "text",
            "encoder": self.model.encoder_shown,
            "fine_tuned": self.model.fine_tuned,
            "max_tokens": self.model.max_tokens,
            "runtime": self.model.runtime,
            "limits": {"max_body_bytes": self.limits.max_body_bytes, "max_texts": MAX_TEXTS},
        }

    async def read(self, request: Request, body: bytes) -> list[tuple[None, str]]:
        """Each text, unnamed (the answers come in the order of the texts), its surrounding
        spaces stripped as ``predict`` strips them."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            raise BadRequest(415, f"a text model reads {_TEXT_BODY}")
        if media_type == "application/json":
            return [(None, text) for text in _json_texts(body)]
        text = _text(body, "the body")
        if not text:
            raise BadRequest(400, f"empty body: send {_TEXT_BODY}")
        if text.startswith("{") and _looks_like_texts(text):
            raise BadRequest(415, "a JSON body needs the header Content-Type: application/json")
        return [(None, text)]

    def close(self) -> None:
        pass


def create_app(
    model: Predictor | TextPredictor,
    *,
    max_batch: int = 32,
    limits: Limits | None = None,
    quiet: bool = True,
):
    """The ASGI application serving ``model`` (an image or a text model; see the module's
    description); unless ``quiet``, it says on stderr when it has stopped."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    limits = limits or Limits()
    if getattr(model, "modality", "image") == "text":
        inputs = TextRequests(model, limits)
    else:
        inputs = ImageRequests(model, limits, max_batch)
    batcher = MicroBatcher(inputs.predict_rows, max_batch)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise BadRequest(413, _too_large(int(declared), limits.max_body_bytes))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise BadRequest(413, _too_large(len(body), limits.max_body_bytes))
        return bytes(body)

    async def predict(request: Request) -> JSONResponse:
        try:
            top_k = _top_k(request.query_params.get("top_k", "1"))
            named = await inputs.read(request, await read_body(request))
        except BadRequest as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        try:
            rows = await asyncio.gather(*(batcher.probabilities(item) for _, item in named))
        except Exception as error:  # the model's failure: said in the log, a JSON 500 here
            _log.exception("serve: the model failed on a request's input")
            message = f"the model failed on this input ({type(error).__name__}); see the log"
            return JSONResponse({"error": message}, status_code=500)
        answers = []
        predictions = ranked(np.stack(rows), model.classes, top_k)
        for (name, _), prediction in zip(named, predictions, strict=True):
            answer = {
                "label": prediction.label,
                "probability": prediction.probability,
                "top": [{"label": label, "probability": p} for label, p in prediction.top],
            }
            answers.append(answer if name is None else {"file": name, **answer})
        return JSONResponse({"predictions": answers})

    async def health(request: Request) -> JSONResponse:
        if worker is None or worker.done():  # the batcher is gone: nothing would be answered
            return JSONResponse({"status": "not serving"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metadata(request: Request) -> JSONResponse:
        described = inputs.describe()
        return JSONResponse(
            {
                "classes": list(model.classes),
                **described,
                "temperature": model.temperature,
                "headstart_version": __version__,
                "limits": {**described["limits"], "max_batch": max_batch},
                "batches": {"run": batcher.batches, inputs.noun: batcher.inputs},
            }
        )

    worker: asyncio.Task | None = None

    @asynccontextmanager
    async def lifespan(app):
        nonlocal worker
        worker = asyncio.create_task(batcher.run())
        try:
            yield
        finally:  # uvicorn has answered every request it held
            worker.cancel()
            batcher.worker.shutdown(wait=True)
            inputs.close()
            say(
                quiet,
                f"serve: stopped, every request answered ({inputs.noun} predicted: "
                f"{batcher.inputs})",
            )

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 32,
    limits: Limits | None = None,
    calibrated: bool = True,
) -> None:
    """Serve the model at ``bundle`` (a run folder, a bundle, or an export) until SIGINT or
    SIGTERM."""
    try:
        import uvicorn
    except ImportError:
        raise HeadstartError(
            "serving needs the serve extra: pip install 'headstart[serve]'"
        ) from None
    from .console import err
    from .loading import load

    model = load(bundle)
    if getattr(model, "task", "classification") != "classification":
        raise HeadstartError(f"{bundle} is a {model.task} model: serve is for classifiers (so far)")
    if not calibrated:
        model.temperature = 1.0
    err.print(
        f"serving {bundle} ({len(model.classes)} classes) on http://{host}:{port}: POST "
        "/predict, GET /health, GET /metadata; Ctrl-C or SIGTERM stops it",
        soft_wrap=True,
    )
    uvicorn.run(
        create_app(model, max_batch=max_batch, limits=limits, quiet=False),
        host=host,
        port=port,
        log_level="warning",
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=30,
    )


def _size(file: Path, what: str) -> tuple[int, int]:
    """Width and height of an uploaded file from its header: a photo in one of
    :data:`FORMATS`, or a stack of channels (``.npy``, a multi-channel TIFF)."""
    shape = stack_shape(file)  # raises UnreadableImage for a stack it cannot use
    if shape is not None:
        return shape[1], shape[0]
    try:
        with Image.open(file, formats=FORMATS) as header:
            return header.size
    except Image.DecompressionBombError:
        raise BadRequest(413, f"{what}: its header asks for too many pixels") from None
    except Exception:
        pass
    try:
        with Image.open(file) as header:
            kind = header.format
    except Exception:
        return 0, 0  # not an image Pillow knows: the decoder says what it is, and refuses it
    raise BadRequest(
        415, f"{what}: {kind} images are not accepted here (send {', '.join(FORMATS)})"
    )


def _top_k(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise BadRequest(400, f"top_k={value!r}: a whole number, at least 1")
    return int(value)


def _too_large(size: int, limit: int) -> str:
    return f"request of {size:,} bytes, over this server's limit of {limit:,}"


def _text(body: bytes, what: str) -> str:
    """``body`` as text (UTF-8, a byte-order mark dropped, as ``predict`` reads files), stripped."""
    try:
        return body.decode("utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise BadRequest(
            400, f"{what} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None


def _json(text: str):
    """The JSON document ``text`` holds; a :class:`BadRequest` where it holds none that can be
    read (malformed, a number too long, nesting too deep)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise BadRequest(400, f"the body is not JSON that can be read: {error}") from None


def _looks_like_texts(text: str) -> bool:
    try:
        document = _json(text)
    except BadRequest:
        return False
    return isinstance(document, dict) and "texts" in document


def _json_texts(body: bytes) -> list[str]:
    """The texts of a JSON body, ``{"texts": [...]}``: 1 to :data:`MAX_TEXTS` strings, none
    blank, each Unicode a tokenizer can read (a lone surrogate, which JSON can spell, is not)."""
    document = _json(_text(body, "the JSON body"))
    texts = document.get("texts") if isinstance(document, dict) else None
    if not isinstance(texts, list) or not texts:
        raise BadRequest(400, 'send JSON {"texts": ["a text", ...]}: one text or more')
    if len(texts) > MAX_TEXTS:
        raise BadRequest(413, f"{len(texts):,} texts, over this server's limit of {MAX_TEXTS}")
    stripped = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(400, f"text {i} is {_JSON_TYPES.get(type(text), 'not a string')}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(400, f"text {i} holds a lone surrogate: not Unicode text") from None
        stripped.append(text.strip())
        if not stripped[-1]:
            raise BadRequest(400, f"text {i} is empty: send texts to classify")
    return stripped


def _settle(done: asyncio.Future, row: np.ndarray | None = None, error: Exception | None = None):
    if done.done():  # its client has gone
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(row)
