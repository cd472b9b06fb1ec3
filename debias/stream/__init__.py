"""The pre-tokenized Pythia training stream: MMIDIDX read/write, steps <-> rows, windows, packing."""

from debias.stream.geometry import Geometry, Window
from debias.stream.mmidx import (
    DTYPE_CODES,
    IndexedStream,
    StreamWriter,
    dtype_for_vocab,
)

__all__ = ["DTYPE_CODES", "Geometry", "IndexedStream", "StreamWriter", "Window", "dtype_for_vocab"]
