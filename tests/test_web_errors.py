"""The one table from errors to statuses: every documented status, and dependencies down are 503."""
import pytest
import redis
from sqlalchemy.exc import OperationalError

from core import errors
from core.preprocess import ImageTooLarge, UnsupportedImage, UnusableImage
from models.registry import ModelNotFound, RegistryError
from server.web.errors import HttpError, error_parts
from server.web.http import error_response


@pytest.mark.parametrize("error, status, code", [
    (errors.InvalidInput("bad"), 400, "bad_request"),
    (errors.Unauthenticated("who?"), 401, "unauthorized"),
    (errors.Forbidden("no"), 403, "forbidden"),
    (errors.NotFound("gone"), 404, "not_found"),
    (ModelNotFound("no model named 'x'"), 404, "model_not_found"),
    (RegistryError("active"), 409, "conflict"),
    (errors.Conflict("taken", "email_taken"), 409, "email_taken"),
    (errors.TooLarge("big"), 413, "payload_too_large"),
    (ImageTooLarge("big image"), 413, "image_too_large"),
    (UnsupportedImage("svg"), 415, "unsupported_media_type"),
    (UnusableImage("blank", "blank_image"), 422, "blank_image"),
    (errors.RateLimited("slow down", retry_after=3), 429, "rate_limited"),
    (errors.Unavailable("down"), 503, "service_unavailable"),
    (HttpError(405, "method_not_allowed", "no"), 405, "method_not_allowed"),
])
def test_each_kind_of_error_has_its_status(error, status, code):
    got_status, got_code, message, _ = error_parts(error)
    assert (got_status, got_code, message) == (status, code, error.message)


def test_retry_after_travels_as_a_header():
    assert error_parts(errors.RateLimited("slow", retry_after=7))[3] == {"Retry-After": "7"}
    assert error_parts(errors.Unavailable("down"))[3]["Retry-After"] == "5"


@pytest.mark.parametrize("exc", [
    redis.ConnectionError("connection refused"),
    redis.TimeoutError("read timed out"),
    OperationalError("SELECT 1", {}, Exception("Can't connect to MySQL server")),
])
def test_a_dependency_that_drops_mid_request_is_503_not_500(exc):
    status, code, _, headers = error_parts(exc)
    assert (status, code) == (503, "service_unavailable") and headers["Retry-After"]


def test_a_bug_is_a_500_without_details():
    response = error_response(KeyError("secret internals"))
    assert response.status == 500
    assert b"secret" not in response.body and b'"internal"' in response.body


def test_v2_routes_get_the_protocol_error_shape():
    assert error_response(errors.InvalidInput("shape must be [N,28,28]"), "v2").body == \
        b'{"error": "shape must be [N,28,28]"}'


@pytest.mark.parametrize("status, code", [
    (400, "bad_request"), (404, "not_found"), (413, "payload_too_large"), (503, "service_unavailable"),
    (405, "method_not_allowed"), (408, "request_timeout"), (414, "request_uri_too_long"),
    (501, "not_implemented"), (505, "http_version_not_supported"), (500, "internal"),
])
def test_statuses_the_http_server_chose_go_through_the_same_table(status, code):
    from server.web.errors import http_error

    got_status, got_code, _, headers = error_parts(http_error(status, "from the server"))
    assert (got_status, got_code) == (status, code)
    assert ("Retry-After" in headers) == (status == 503)
