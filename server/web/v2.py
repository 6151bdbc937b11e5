"""Open Inference Protocol v2 (KServe / Triton / MLServer REST), synchronous, in the web process.

Concurrent requests for the same model version are batched into one network
call (adaptive: what is waiting, up to MAX_BATCH images). The binary tensor
data extension is spoken both ways (`Inference-Header-Content-Length`), so
tritonclient works with its defaults and large batches skip JSON.
"""
from __future__ import annotations

import json
import threading

import numpy as np

from core.errors import InvalidInput
from models.registry import ModelNotFound, VersionInfo
from server.services.batching import Batcher, Slot, Ticket
from server.services.bootstrap import Services
from server.web.http import Request, Response, Router, json_response

HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}

INPUT_SHAPES = ([-1, 28, 28], [-1, 28, 28, 1], [-1, 784])
MAX_BATCH = 256


class LazyModels:
    """TensorFlow is imported on the first inference, not at web start-up."""

    def __init__(self, services: Services):
        self.services = services
        self._cache = None
        self._lock = threading.Lock()

    @property
    def cache(self):
        with self._lock:
            if self._cache is None:
                from models.runtime import configure_tensorflow
                from models.serving import ModelCache

                configure_tensorflow(self.services.settings.serving_threads())
                self._cache = ModelCache(self.services.registry)
            return self._cache


def _version(services: Services, name: str, version: str | None) -> VersionInfo:
    if version is None:
        return services.catalog.get(name, kind="classifier")
    if not version.isdigit():
        raise ModelNotFound(f"model {name!r} has no version {version}")
    return services.catalog.get(name, int(version), kind="classifier")


class InferenceBatcher:
    """Concurrent infer requests share one network call per model version (see `batching.Batcher`)."""

    def __init__(self, models: LazyModels, max_wait: float, observe=lambda size: None):
        self.models, self.observe = models, observe
        self.batcher: Batcher[tuple[VersionInfo, np.ndarray]] = Batcher(
            "v2-batcher", self._infer, MAX_BATCH, max_wait, size=lambda item: len(item[1]))

    def arriving(self):
        return self.batcher.arriving()

    def probabilities(self, info: VersionInfo, images: np.ndarray, ticket: Ticket | None = None) -> np.ndarray:
        return self.batcher.submit((info, images), ticket)

    def _infer(self, batch: list[Slot[tuple[VersionInfo, np.ndarray]]]) -> None:
        by_version: dict[int, list[Slot]] = {}
        for slot in batch:
            by_version.setdefault(slot.item[0].id, []).append(slot)
        for slots in by_version.values():
            try:
                model = self.models.cache.get(slots[0].item[0])
                images = np.concatenate([slot.item[1] for slot in slots])
                out = model.probabilities(images)
                self.observe(len(images))
                offset = 0
                for slot in slots:
                    slot.result = out[offset:offset + len(slot.item[1])]
                    offset += len(slot.item[1])
            except Exception as exc:  # handed to each caller, which answers for it
                for slot in slots:
                    slot.error = exc


def _split_body(req: Request) -> tuple[dict, bytes]:
    """The JSON inference request and, with the binary extension, the bytes after it."""
    raw_length = req.headers.get(HEADER_LENGTH)
    if raw_length is None:
        payload, binary = req.json(), b""
    else:
        if not raw_length.isdigit() or int(raw_length) > len(req.body):
            raise InvalidInput(f"{HEADER_LENGTH} must be the length of the JSON part of the body")
        length = int(raw_length)
        header = Request(req.method, req.path, "", {}, req.body[:length])
        payload, binary = header.json(), req.body[length:]
    if not isinstance(payload, dict):
        raise InvalidInput("send a JSON object with `inputs`")
    return payload, binary


def _tensor_values(request_input: dict, binary: bytes) -> tuple[np.ndarray, bytes]:
    """The input's values (from JSON `data` or from its binary part) and the binary left after it."""
    datatype = request_input.get("datatype")
    size = (request_input.get("parameters") or {}).get("binary_data_size")
    if size is None:
        try:
            return np.asarray(request_input.get("data"), dtype=np.float64), binary
        except (TypeError, ValueError):
            raise InvalidInput("input data must be numbers") from None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
        raise InvalidInput("binary_data_size must be the number of bytes of the input after the JSON")
    if datatype not in DTYPES or size % DTYPES[datatype].itemsize:
        raise InvalidInput("binary data must be FP32 or UINT8, a whole number of elements")
    return np.frombuffer(binary[:size], DTYPES[datatype]).astype(np.float64), binary[size:]


def _images(request_input: dict, values: np.ndarray) -> np.ndarray:
    """One tensor, [N,28,28], [N,28,28,1] or [N,784]; FP32 in 0..1 or UINT8 in 0..255."""
    shape, datatype, array = request_input.get("shape"), request_input.get("datatype"), values
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput("input shape must be a list of non-negative integers")
    if len(shape) not in (2, 3, 4) or shape[1:] not in ([28, 28], [28, 28, 1], [784]):
        raise InvalidInput("input shape must be [N,28,28], [N,28,28,1] or [N,784]")
    if not 1 <= shape[0] <= MAX_BATCH:
        raise InvalidInput(f"batch size must be between 1 and {MAX_BATCH}")
    if datatype not in ("FP32", "UINT8"):
        raise InvalidInput("datatype must be FP32 (0..1) or UINT8 (0..255)")
    if array.size != int(np.prod(shape)):
        raise InvalidInput(f"input data has {array.size} values; shape {shape} needs {int(np.prod(shape))}")
    if not np.isfinite(array).all():
        raise InvalidInput("input data must be finite numbers")
    if datatype == "UINT8":
        if array.min() < 0 or array.max() > 255:
            raise InvalidInput("UINT8 data must be in 0..255")
        array = array / 255.0
    elif array.min() < 0 or array.max() > 1:
        raise InvalidInput("FP32 data must be in 0..1 (MNIST convention: white digit on black)")
    return array.reshape(shape[0], 28, 28).astype(np.float32)


def _binary_output_wanted(payload: dict) -> bool:
    if (payload.get("parameters") or {}).get("binary_data_output") is True:
        return True
    outputs = payload.get("outputs")
    return isinstance(outputs, list) and any(
        isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") is True for o in outputs)


def register(router: Router, services: Services, version_string: str, metrics) -> LazyModels:
    models = LazyModels(services)
    batcher = InferenceBatcher(models, services.settings.batch_max_wait_ms / 1000, metrics.v2_batch.observe)

    def server_metadata(req: Request):
        return {"name": "digitserve", "version": version_string, "extensions": ["binary_tensor_data"]}

    def live(req: Request):
        return {"live": True}

    def ready(req: Request):
        try:
            active = services.catalog.active_versions()
        except Exception:
            active = {}
        return json_response({"ready": bool(active)}, 200 if active else 503)

    def metadata(req: Request, name: str, version: str | None = None):
        info = _version(services, name, version)
        versions = [str(v.version) for v in services.registry.list(name)]
        return {
            "name": info.name,
            "versions": versions,
            "platform": "tensorflow_keras",
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        }

    def model_ready(req: Request, name: str, version: str | None = None):
        _version(services, name, version)
        return {"name": name, "ready": True}

    def infer(req: Request, name: str, version: str | None = None):
        with batcher.arriving() as ticket:
            info = _version(services, name, version)
            payload, binary = _split_body(req)
            inputs = payload.get("inputs")
            if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
                raise InvalidInput("send exactly one input tensor in `inputs`")
            values, _ = _tensor_values(inputs[0], binary)
            probabilities = batcher.probabilities(info, _images(inputs[0], values), ticket).astype("<f4")
        output = {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape)}
        response = {"model_name": info.name, "model_version": str(info.version), "outputs": [output]}
        if isinstance(payload.get("id"), str):
            response["id"] = payload["id"]
        if not _binary_output_wanted(payload):
            output["data"] = [round(float(p), 7) for p in probabilities.reshape(-1)]
            return response
        data = probabilities.tobytes()
        output["parameters"] = {"binary_data_size": len(data)}
        header = json.dumps(response, separators=(",", ":")).encode()
        return Response(200, header + data, "application/octet-stream", {HEADER_LENGTH: str(len(header))})

    router.add("GET", "/v2", server_metadata, errors="v2")
    router.add("GET", "/v2/health/live", live, errors="v2")
    router.add("GET", "/v2/health/ready", ready, errors="v2")
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        router.add("GET", base, metadata, auth="predict", errors="v2")
        router.add("GET", base + "/ready", model_ready, auth="predict", errors="v2")
        router.add("POST", base + "/infer", infer, auth="predict", errors="v2")
    return models
