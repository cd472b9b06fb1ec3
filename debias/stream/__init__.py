"""The pre-tokenized Pythia training stream: MMIDIDX read/write, steps <-> rows, windows, packing."""

from debias.stream.geometry import Geometry, Window
from debias.stream.download import HUB_REPOS, download_stream
from debias.stream.mmidx import (
    DTYPE_CODES,
    IndexedStream,
    StreamWriter,
    dtype_for_vocab,
    write_index,
)
from debias.stream.pack import pack_texts, read_documents

__all__ = [
    "DTYPE_CODES", "HUB_REPOS", "Geometry", "IndexedStream", "StreamWriter", "Window",
    "download_stream", "dtype_for_vocab", "pack_texts", "read_documents", "write_index",
]
