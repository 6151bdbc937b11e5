"""Request.form(): multipart/form-data parsing, without a server or a database."""
from __future__ import annotations

import pytest

from core.errors import InvalidInput
from server.web.http import Request

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-the-boundary\r\n" + b"IEND\xaeB`\x82"


def request(body: bytes, content_type: str = "multipart/form-data; boundary=b0und") -> Request:
    return Request("POST", "/api/v1/predictions", "", {"Content-Type": content_type}, body)


def part(name: str | None, data: bytes, filename: str | None = None, boundary: str = "b0und",
         extra: str = "") -> bytes:
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + data + b"\r\n"


def end(boundary: str = "b0und") -> bytes:
    return f"--{boundary}--\r\n".encode()


def bad_multipart(body: bytes, content_type: str = "multipart/form-data; boundary=b0und",
                  max_images: int = 16) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        request(body, content_type).form(max_images)
    assert caught.value.code == "bad_multipart"
    return caught.value


def test_images_and_fields_in_order():
    images = [PNG, b"second", b""]
    body = (part("wait", b"2.5") + part("image", images[0], "a.png", extra="Content-Type: image/png\r\n")
            + part("model", b"mlp:1") + part("image", images[1], "b.png") + part("image", images[2], "c.png")
            + end())
    assert request(body).form() == ({"wait": "2.5", "model": "mlp:1"}, images)


def test_sixteen_images_and_a_repeated_field_keeps_the_last():
    body = b"".join(part("image", bytes([i]) * 300, f"{i}.png") for i in range(16))
    body += part("wait", b"1") + part("wait", b"3") + end()
    fields, images = request(body).form()
    assert fields == {"wait": "3"}
    assert images == [bytes([i]) * 300 for i in range(16)]


def test_a_field_with_bytes_that_are_not_utf8_is_decoded_with_replacement():
    body = part("model", b"ml\xffp\xc3") + part("note", "ünï".encode()) + end()
    assert request(body).form() == ({"model": "ml\ufffdp\ufffd", "note": "ünï"}, [])


@pytest.mark.parametrize("content_type", [
    'multipart/form-data; boundary="a:b c=d"',
    'Multipart/Form-Data;boundary="a:b c=d"; charset=utf-8',
    'multipart/form-data; charset=utf-8; BOUNDARY="a:b c=d"',
])
def test_quoted_boundary(content_type):
    body = part("image", PNG, "a.png", boundary="a:b c=d") + part("wait", b"1", boundary="a:b c=d") + end("a:b c=d")
    assert request(body, content_type).form() == ({"wait": "1"}, [PNG])


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"a\r\nb", b"\r\n--b0un", b"--b0und-"])
def test_line_breaks_and_boundary_prefixes_inside_a_part_are_data(data):
    body = part("image", data) + part("wait", data) + end()
    fields, images = request(body).form()
    assert images == [data]
    assert fields == {"wait": data.decode()}


def test_preamble_epilogue_and_a_close_delimiter_without_a_final_crlf():
    body = b"preamble, ignored\r\n" + part("image", PNG) + b"--b0und--" + b"\r\nepilogue, ignored"
    assert request(body).form() == ({}, [PNG])
    assert request(part("image", PNG) + b"--b0und--").form() == ({}, [PNG])


@pytest.mark.parametrize("body", [b"", b"--b0und--", b"--b0und--\r\n"])
def test_a_body_with_no_parts_gives_nothing(body):
    assert request(body).form() == ({}, [])


@pytest.mark.parametrize("content_type", [
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    "multipart/form-data; charset=utf-8",
    "",
])
def test_missing_boundary(content_type):
    error = bad_multipart(part("image", PNG) + end(), content_type)
    assert error.message == "the multipart body could not be parsed (missing boundary?)"


@pytest.mark.parametrize("body", [
    b"this is not multipart at all",
    b"\x00\xff" * 100,
    part("image", PNG),                                           # no close delimiter
    part("image", PNG)[:-2],                                      # cut inside the part
    b"--b0und\r\nContent-Disposition: form-data; name=\"image\"",  # cut inside the header
    b"--b0und\r\nContent-Disposition form-data\r\n\r\nx\r\n" + end(),  # a header line without a colon
    b"--b0undX\r\n" + end(),                                      # bytes after the first boundary
    part("image", PNG) + b"--b0und!!\r\n" + end(),                # bytes after a boundary
    part("image", PNG).replace(b"\r\n", b"\n") + b"--b0und--\n",  # bare LF line breaks (RFC 7578 wants CRLF)
    b"--b0und\r\nContent-Type: text/plain\r\n\r\nx\r\n" + end(),  # a part without Content-Disposition
])
def test_garbage_is_bad_multipart(body):
    bad_multipart(body)


def test_fifty_thousand_tiny_parts_are_refused():
    body = b"".join(part(f"f{i}", b"x") for i in range(50_000)) + end()
    error = bad_multipart(body)
    assert "parts" in error.message


def test_the_part_limit_follows_the_image_limit():
    def body(n, images=16):
        return b"".join(part("image" if i < images else f"f{i}", b"x") for i in range(n)) + end()

    fields, images = request(body(64)).form()
    assert len(images) == 16 and len(fields) == 48
    bad_multipart(body(65))
    fields, images = request(body(256 + 48, images=256)).form(max_images=256)
    assert len(images) == 256 and len(fields) == 48
    assert "304 parts" in bad_multipart(body(256 + 49, images=256), max_images=256).message


@pytest.mark.parametrize("extra", [
    "X-Long: " + "a" * 10_000 + "\r\n",                      # one huge header line
    "".join(f"X-Header-{i}: v\r\n" for i in range(100)),     # very many headers
])
def test_oversized_part_headers_are_refused(extra):
    error = bad_multipart(part("image", PNG, extra=extra) + end())
    assert "header" in error.message


def test_a_multipart_nested_a_thousand_deep_inside_a_part_is_just_bytes():
    inner = b"innermost"
    for depth in range(1000):
        boundary = f"nested{depth}"
        inner = (f"--{boundary}\r\nContent-Type: multipart/mixed; boundary=nested{depth - 1}\r\n"
                 f"Content-Disposition: form-data; name=\"image\"\r\n\r\n").encode() + inner + f"\r\n--{boundary}--".encode()
    body = part("image", inner, extra="Content-Type: multipart/mixed; boundary=nested999\r\n") + end()
    try:
        fields, images = request(body).form()
    except InvalidInput as exc:  # refusing it is fine too, but only as bad input
        assert exc.code == "bad_multipart"
    else:
        assert fields == {} and images == [inner]


def test_a_part_without_a_name_is_ignored():
    body = part(None, b"anonymous") + part("", b"empty name") + part("image", PNG) + end()
    assert request(body).form() == ({}, [PNG])


@pytest.mark.parametrize("filename", [
    "ünïcødé 数字 😀.png",
    "a; name=wait; b.png",
    "C:\\Users\\me\\digit.png",
    "%22quoted%22 name=image.png",
    "",
])
def test_a_filename_with_odd_characters_does_not_change_the_name(filename):
    body = part("image", PNG, filename) + part("wait", b"1", filename) + end()
    assert request(body).form() == ({"wait": "1"}, [PNG])


def test_a_base64_or_quoted_printable_part_is_decoded_as_before():
    body = (part("image", b"iVBORw0KGgo=", extra="Content-Transfer-Encoding: base64\r\n")
            + part("wait", b"2=2E5", extra="Content-Transfer-Encoding: quoted-printable\r\n") + end())
    assert request(body).form() == ({"wait": "2.5"}, [b"\x89PNG\r\n\x1a\n"])
    bad_multipart(part("image", b"iVBORw0KGgo", extra="Content-Transfer-Encoding: base64\r\n") + end())


def test_a_boundary_with_a_line_break_is_bad_multipart():
    bad_multipart(part("image", PNG) + end(), 'multipart/form-data; boundary="a\nb"')
