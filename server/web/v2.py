"""Open Inference Protocol v2 (KServe / Triton / MLServer REST), synchronous, in the web process."""
from __future__ import annotations

import threading

import numpy as np

from core.errors import InvalidInput
from models.registry import ModelNotFound, VersionInfo
from server.services.bootstrap import Services
from server.web.http import Request, Router, json_response

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
        return services.registry.get(name)
    if not version.isdigit():
        raise ModelNotFound(f"model {name!r} has no version {version}")
    return services.registry.get(name, int(version))


def _images(request_input: dict) -> np.ndarray:
    """One tensor, [N,28,28], [N,28,28,1] or [N,784]; FP32 in 0..1 or UINT8 in 0..255."""
    shape, datatype, data = request_input.get("shape"), request_input.get("datatype"), request_input.get("data")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput("input shape must be a list of non-negative integers")
    if len(shape) not in (2, 3, 4) or shape[1:] not in ([28, 28], [28, 28, 1], [784]):
        raise InvalidInput("input shape must be [N,28,28], [N,28,28,1] or [N,784]")
    if not 1 <= shape[0] <= MAX_BATCH:
        raise InvalidInput(f"batch size must be between 1 and {MAX_BATCH}")
    if datatype not in ("FP32", "UINT8"):
        raise InvalidInput("datatype must be FP32 (0..1) or UINT8 (0..255)")
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("input data must be numbers") from None
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


def register(router: Router, services: Services, version_string: str) -> LazyModels:
    models = LazyModels(services)

    def server_metadata(req: Request):
        return {"name": "digitserve", "version": version_string, "extensions": []}

    def live(req: Request):
        return {"live": True}

    def ready(req: Request):
        try:
            active = services.registry.active_versions()
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
        info = _version(services, name, version)
        payload = req.json()
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise InvalidInput("send exactly one input tensor in `inputs`")
        images = _images(inputs[0])
        probabilities = models.cache.get(info).probabilities(images)
        response = {
            "model_name": info.name,
            "model_version": str(info.version),
            "outputs": [{
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": [round(float(p), 7) for p in probabilities.reshape(-1)],
            }],
        }
        if isinstance(payload.get("id"), str):
            response["id"] = payload["id"]
        return response

    router.add("GET", "/v2", server_metadata, errors="v2")
    router.add("GET", "/v2/health/live", live, errors="v2")
    router.add("GET", "/v2/health/ready", ready, errors="v2")
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        router.add("GET", base, metadata, auth="predict", errors="v2")
        router.add("GET", base + "/ready", model_ready, auth="predict", errors="v2")
        router.add("POST", base + "/infer", infer, auth="predict", errors="v2")
    return models
