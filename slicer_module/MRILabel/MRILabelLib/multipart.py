"""multipart/form-data bodies: encoding requests (file uploads) and decoding MONAI Label's infer answers."""

import uuid
from typing import Dict, NamedTuple, Optional, Tuple


class Part(NamedTuple):
    """One part of a multipart body."""

    name: str
    filename: Optional[str]
    content_type: Optional[str]
    data: bytes


def encode(fields: Dict[str, str], files: Dict[str, Tuple[str, bytes]]) -> Tuple[bytes, str]:
    """Build a multipart/form-data body.

    Args:
        fields: form field name -> text value.
        files: form field name -> ``(file name, content)``.

    Returns:
        ``(body, content_type header value)``.
    """
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        chunks.append(str(value).encode("utf-8") + b"\r\n")
    for name, (filename, content) in files.items():
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        chunks.append(header.encode())
        chunks.append(bytes(content) + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _boundary(content_type: str) -> str:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip().strip('"')
    raise ValueError(f"content_type has no boundary: {content_type!r}")


def _disposition(header: str) -> Dict[str, str]:
    params = {}
    for item in header.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        params[key.lower()] = value.strip().strip('"')
    return params


def decode(body: bytes, content_type: str) -> Dict[str, Part]:
    """Split a multipart body into its parts, byte-exact (binary file parts are not altered).

    Args:
        body: the response body.
        content_type: the response's Content-Type header (holds the boundary).

    Returns:
        Form field name -> :class:`Part`.
    """
    delimiter = b"--" + _boundary(content_type).encode()
    parts = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, data = chunk.partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = _disposition(headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        parts[name] = Part(name, disposition.get("filename"), headers.get("content-type"), data)
    return parts
