"""End to end: the real web server and worker processes, the Python client and the CLI."""
import http.cookiejar
import io
import json
import subprocess
import sys
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from conftest import PASSWORD, ROOT
from server.cli.client import Client, ClientError

pytestmark = pytest.mark.slow


def browser(live):
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def call(opener, live, method, path, payload=None, headers=None):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(live.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with opener.open(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def api_key(live_server):
    opener = browser(live_server)
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    call(opener, live_server, "POST", "/api/v1/users", {"email": email, "password": PASSWORD})
    session = call(opener, live_server, "POST", "/api/v1/sessions", {"email": email, "password": PASSWORD})
    key = call(opener, live_server, "POST", "/api/v1/keys", {"name": "e2e", "scopes": ["predict"]},
               {"X-CSRF-Token": session["csrf_token"]})
    return key["key_id"], key["secret"]


@pytest.fixture
def client(live_server, api_key):
    return Client(live_server.url, *api_key)


def encode(array: np.ndarray, fmt: str, invert: bool = False, canvas: bool = False) -> bytes:
    big = np.kron(array, np.ones((6, 6), np.uint8))
    if canvas:  # what a browser canvas exports: black strokes on a transparent background
        rgba = np.zeros(big.shape + (4,), np.uint8)
        rgba[..., 3] = big
        image = Image.fromarray(rgba, "RGBA")
    else:
        image = Image.fromarray(255 - big if invert else big, "L")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def one_per_digit(mnist):
    """The first test-set image of each digit that our tiny MLP must recognise."""
    seen = {}
    for image, label in zip(mnist.x_test, mnist.y_test):
        seen.setdefault(int(label), image)
        if len(seen) == 10:
            return [seen[d] for d in range(10)]


STYLES = [("PNG", False, False), ("PNG", False, True), ("JPEG", True, False), ("WEBP", False, False),
          ("GIF", True, False), ("BMP", False, False), ("TIFF", True, False)]


def test_one_image_per_digit_in_many_formats(client, mnist):
    digits = one_per_digit(mnist)
    images = [encode(digits[d], *STYLES[d % len(STYLES)]) for d in range(10)]
    result = client.predict(images, model="mlp", wait=10)
    assert result["status"] == "succeeded", result
    predicted = [r["digit"] for r in result["results"]]
    assert sum(p == d for d, p in enumerate(predicted)) >= 9, predicted


def test_sync_wait_answers_200_with_the_result(client, live_server, mnist):
    document = client.submit([encode(one_per_digit(mnist)[3], "PNG")], wait=10)
    assert document["status"] == "succeeded"
    assert document["results"][0]["digit"] == 3
    assert document["timings"]["compute_ms"] < 1000


def test_async_submit_then_poll(client, mnist):
    document = client.submit([encode(one_per_digit(mnist)[8], "PNG", invert=True)], wait=0)
    assert document["status"] in ("queued", "running", "succeeded")
    done = client.predict([encode(one_per_digit(mnist)[8], "PNG", invert=True)], wait=0)
    assert done["results"][0]["digit"] == 8
    assert client.prediction(document["id"])["id"] == document["id"]


def test_errors_reach_the_client_as_json(client):
    with pytest.raises(ClientError) as info:
        client.submit([b"GIF89a definitely not a gif"], wait=0)
    assert info.value.status in (415, 422)
    with pytest.raises(ClientError) as info:
        client.submit([b"plain text"], model="nope")
    assert info.value.status in (404, 415)


def test_cli_signs_and_prints_the_digit(live_server, api_key, mnist, tmp_path):
    path = tmp_path / "seven.png"
    path.write_bytes(encode(one_per_digit(mnist)[7], "PNG", invert=True))
    env = {"DIGITSERVE_URL": live_server.url, "DIGITSERVE_KEY_ID": api_key[0], "DIGITSERVE_SECRET": api_key[1],
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "server.cli", "predict", str(path), "--wait", "10"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{path}: 7 (")
    bad = subprocess.run([sys.executable, "-m", "server.cli", "predict", str(path), "--secret", "wrong"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "401" in bad.stderr


def v2_request(client, path, payload=None):
    body = json.dumps(payload).encode() if payload is not None else b""
    return client.request("POST" if payload is not None else "GET", path, body=body,
                          content_type="application/json" if payload is not None else None)


def test_v2_inference_protocol(client, live_server, mnist):
    # public endpoints, fetched without credentials
    for path, expected in (("/v2", "name"), ("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        with urllib.request.urlopen(live_server.url + path, timeout=10) as response:
            assert response.status == 200 and expected in json.loads(response.read())
    meta = v2_request(client, "/v2/models/mlp")
    assert meta["name"] == "mlp" and "1" in meta["versions"]
    assert meta["inputs"][0]["shape"] == [-1, 28, 28] and meta["outputs"][0]["name"] == "probabilities"
    assert v2_request(client, "/v2/models/mlp/versions/1/ready")["ready"] is True
    digits = one_per_digit(mnist)
    # an infer request written by hand from the protocol: one tensor, row-major flat data
    request = {"id": "req-1", "inputs": [{"name": "images", "shape": [2, 784], "datatype": "UINT8",
                                          "data": [int(v) for v in np.stack([digits[2], digits[6]]).reshape(-1)]}]}
    answer = v2_request(client, "/v2/models/mlp/infer", request)
    assert answer["model_name"] == "mlp" and answer["model_version"] == "1" and answer["id"] == "req-1"
    (output,) = answer["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 10]
    probabilities = np.array(output["data"]).reshape(2, 10)
    assert list(probabilities.argmax(1)) == [2, 6]
    nested = {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "FP32",
                          "data": (digits[0] / 255.0).reshape(1, 28, 28, 1).tolist()}]}
    answer = v2_request(client, "/v2/models/mlp/versions/1/infer", nested)
    assert int(np.argmax(answer["outputs"][0]["data"])) == 0
    with pytest.raises(ClientError) as info:
        v2_request(client, "/v2/models/mlp/infer", {"inputs": [{"name": "x", "shape": [1, 27], "datatype": "FP32",
                                                                 "data": [0.0] * 27}]})
    assert info.value.status == 400
    with pytest.raises(ClientError) as info:
        v2_request(client, "/v2/models/nope/infer", request)
    assert info.value.status == 404


def test_the_readme_curl_example_works(live_server, api_key, mnist, tmp_path):
    """The README's shell function signs with openssl and posts with curl: keep it true."""
    readme = (ROOT / "README.md").read_text()
    function = readme[readme.index("ds_post() {"):]
    function = function[:function.index("\n}\n") + 3]
    image = tmp_path / "four.png"
    image.write_bytes(encode(one_per_digit(mnist)[4], "PNG", invert=True))
    env = {"DIGITSERVE_URL": live_server.url, "DIGITSERVE_KEY_ID": api_key[0], "DIGITSERVE_SECRET": api_key[1],
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", function + f'\nds_post /api/v1/predictions "{image}"'],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "succeeded" and document["results"][0]["digit"] == 4


def test_tritonclient_with_its_defaults(live_server, api_key, mnist):
    """The Triton HTTP client, as its users write it: binary tensors in, binary or JSON out."""
    import tritonclient.http as triton

    digits = one_per_digit(mnist)
    client = triton.InferenceServerClient(live_server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {api_key[0]}.{api_key[1]}"}
    assert client.is_server_live() and client.is_model_ready("mlp", headers=headers)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    batch = np.stack([digits[d] for d in range(10)]).astype(np.float32) / 255.0
    images = triton.InferInput("images", list(batch.shape), "FP32")
    images.set_data_from_numpy(batch)  # binary by default
    binary = client.infer("mlp", [images], headers=headers).as_numpy("probabilities")
    assert binary.shape == (10, 10) and sum(binary.argmax(1) == np.arange(10)) >= 8  # a tiny MLP
    wanted = triton.InferRequestedOutput("probabilities", binary_data=False)
    as_json = client.infer("mlp", [images], outputs=[wanted], headers=headers).as_numpy("probabilities")
    np.testing.assert_allclose(as_json, binary, atol=1e-6)
    uint8 = triton.InferInput("images", [3, 784], "UINT8")
    uint8.set_data_from_numpy(np.stack([digits[d] for d in (4, 5, 6)]).reshape(3, 784).astype(np.uint8))
    answer = client.infer("mlp", [uint8], outputs=[triton.InferRequestedOutput("probabilities")], headers=headers)
    np.testing.assert_allclose(answer.as_numpy("probabilities"), binary[[4, 5, 6]], atol=1e-5)
