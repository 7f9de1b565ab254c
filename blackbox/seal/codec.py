"""Payload compression, pluggable by name, with a hard limit on decompressed size.

A codec's ``decompress`` gets the limit and must never produce (or allocate for) more than
``limit`` bytes: a signed batch can still come from a compromised gateway, and a few kilobytes
of zstd can claim gigabytes. Codecs also refuse trailing bytes after the compressed stream, so
one payload has exactly one meaning.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

MAX_RECORDS_BYTES = 64 * 1024 * 1024
"""Largest uncompressed records document a batch may carry (seal and open)."""


class CodecError(ValueError):
    """The compressed bytes are corrupt, too large once decompressed, or followed by junk."""


@dataclass(frozen=True, slots=True)
class Codec:
    """A compression scheme as named in the header's ``compression`` field."""

    name: str
    compress: Callable[[bytes | bytearray], bytes]
    """The records document (a ``bytearray`` as the sealer assembles it) to the payload."""
    decompress: Callable[[bytes, int], bytes]
    """``decompress(data, limit)``: raise :class:`CodecError` rather than exceed ``limit`` bytes."""


def _none_decompress(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise CodecError(f"records are larger than the {limit}-byte limit")
    return data


def _zlib_compress(data: bytes | bytearray) -> bytes:
    return zlib.compress(data, 6)


def _zlib_decompress(data: bytes, limit: int) -> bytes:
    dobj = zlib.decompressobj()
    try:
        out = dobj.decompress(data, limit + 1)
    except zlib.error as exc:
        raise CodecError(f"corrupt zlib stream: {exc}") from None
    if len(out) > limit or dobj.unconsumed_tail:
        raise CodecError(f"records decompress to more than the {limit}-byte limit")
    if not dobj.eof:
        raise CodecError("truncated zlib stream")
    if dobj.unused_data:
        raise CodecError("bytes after the end of the zlib stream")
    return out


def _zstd_compress(data: bytes | bytearray) -> bytes:
    # A new context per call: zstandard contexts are not thread-safe, and this one is cheap.
    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)


def _zstd_decompress(data: bytes, limit: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            # Checked before decompress(), which would allocate the declared size up front.
            raise CodecError(f"records claim {declared} bytes, more than the {limit}-byte limit")
        if declared < 0:
            raise CodecError("the zstd frame does not declare its content size, which the format requires")
        out = zstandard.ZstdDecompressor().decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt zstd frame (or larger than {limit} bytes): {exc}") from None
    if len(out) != declared:
        raise CodecError(f"zstd frame claims {declared} bytes but holds {len(out)}")
    return out


_CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make a compression scheme available to sealing and opening, by its header name."""
    _CODECS[codec.name] = codec


def get_codec(name: str) -> Codec:
    """The codec called ``name``; ``KeyError`` if none is registered."""
    return _CODECS[name]


def codec_names() -> frozenset[str]:
    return frozenset(_CODECS)


register_codec(Codec("none", bytes, _none_decompress))
register_codec(Codec("zlib", _zlib_compress, _zlib_decompress))
register_codec(Codec("zstd", _zstd_compress, _zstd_decompress))
