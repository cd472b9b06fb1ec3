"""Training geometry: which stream rows each step consumes, and the intervention window.

Step `s` (0-based) consumes rows [s * batch_size, (s + 1) * batch_size). A checkpoint `stepN` has
seen steps 0 .. N-1, so continuing from it starts at row N * batch_size. Pythia's defaults:
batch 1024 rows of 2049 tokens (2048 inputs + 1 shifted label), 143,000 steps, checkpoints every
1,000 steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any, Mapping

import numpy as np

from debias.errors import UserError


@dataclass(frozen=True)
class Geometry:
    batch_size: int = 1024
    row_length: int = 2049
    total_steps: int = 143000
    checkpoint_interval: int = 1000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
                raise UserError(f"geometry.{name}={value!r}: must be a positive integer "
                                f"(Pythia: {getattr(Geometry, name)})")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Geometry":
        """From a mapping such as the Hydra node `data.geometry`; missing keys take Pythia's values."""
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"geometry: unknown key(s) {sorted(unknown)}; "
                            f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{key: cfg[key] for key in cfg})

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.row_length

    def first_row(self, step: int) -> int:
        """The first row of `step`; also the first row after a checkpoint `step<step>`."""
        return step * self.batch_size

    def step_rows(self, step: int) -> range:
        return range(self.first_row(step), self.first_row(step + 1))

    def step_of_row(self, row: int) -> int:
        return row // self.batch_size

    def steps_in(self, num_rows: int) -> int:
        """Whole steps a stream of `num_rows` rows can feed."""
        return num_rows // self.batch_size


@dataclass(frozen=True)
class Window:
    """Training steps [start_step, end_step) and the stream rows they consume."""

    geometry: Geometry
    start_step: int
    end_step: int

    def __post_init__(self) -> None:
        g = self.geometry
        if not 0 <= self.start_step < self.end_step <= g.total_steps:
            raise UserError(f"window steps {self.start_step}..{self.end_step}: must satisfy "
                            f"0 <= start < end <= total_steps={g.total_steps}; pick a start step "
                            f"below {g.total_steps}")

    @classmethod
    def from_ratio(cls, geometry: Geometry, ratio: float) -> "Window":
        """The last `ratio` of training, its start rounded to the nearest checkpoint (ties earlier).

        Pythia: 0.07 -> steps 133000..143000, 0.21 -> steps 113000..143000.
        """
        if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0 < ratio < 1:
            raise UserError(f"ratio={ratio!r}: must be a number strictly between 0 and 1 "
                            f"(0.07 = the last 7% of training)")
        g = geometry
        exact_start = (g.total_steps - ratio * g.total_steps) / g.checkpoint_interval
        start = math.ceil(exact_start - 0.5) * g.checkpoint_interval  # nearest; a tie goes earlier
        start = min(max(start, 0), g.total_steps)
        if start >= g.total_steps:
            raise UserError(f"ratio={ratio}: the last {ratio:.2%} of {g.total_steps} steps rounds to "
                            f"no steps on the {g.checkpoint_interval}-step checkpoint grid; use a "
                            f"larger ratio or an explicit start_step")
        return cls(g, start, g.total_steps)

    @classmethod
    def from_start_step(cls, geometry: Geometry, step: int, end_step: int | None = None) -> "Window":
        """From an explicit start step (a checkpoint you hold) to `end_step` (default: the end)."""
        if isinstance(step, bool) or not isinstance(step, Integral):
            raise UserError(f"start_step={step!r}: must be an integer step")
        return cls(geometry, int(step), geometry.total_steps if end_step is None else int(end_step))

    @classmethod
    def from_config(cls, geometry: Geometry, ratio: float | None = None,
                    start_step: int | None = None) -> "Window":
        """An explicit start_step wins over the ratio (as in conf/intervention/*.yaml)."""
        if start_step is not None:
            return cls.from_start_step(geometry, start_step)
        if ratio is None:
            raise UserError("intervention: set either ratio (e.g. 0.07) or start_step")
        return cls.from_ratio(geometry, ratio)

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.end_step - self.start_step

    @property
    def start_row(self) -> int:
        return self.geometry.first_row(self.start_step)

    @property
    def end_row(self) -> int:
        return self.geometry.first_row(self.end_step)

    @property
    def num_rows(self) -> int:
        return self.end_row - self.start_row

    @property
    def num_tokens(self) -> int:
        return self.num_rows * self.geometry.row_length

    def num_bytes(self, dtype) -> int:
        return self.num_tokens * np.dtype(dtype).itemsize

    @property
    def ratio(self) -> float:
        return self.num_steps / self.geometry.total_steps

    def describe(self) -> dict:
        """Plain numbers for manifests and reports."""
        return {"start_step": self.start_step, "end_step": self.end_step, "num_steps": self.num_steps,
                "start_row": self.start_row, "end_row": self.end_row, "num_rows": self.num_rows,
                "num_tokens": self.num_tokens, "ratio": self.ratio, "geometry": asdict(self.geometry)}

    # -- fitting a stream ------------------------------------------------------------------------
    def check_fits(self, stream) -> None:
        """Raise a UserError unless `stream` has rows of the geometry's length up to the window's end."""
        g, name = self.geometry, getattr(stream, "idx_path", stream)
        if len(stream) == 0:
            raise UserError(f"{name}: the stream holds no rows; pass the training stream")
        if stream.row_length != g.row_length:
            found = f"rows of {stream.row_length} tokens" if stream.row_length else "rows of different lengths"
            raise UserError(f"{name}: {found}, but the geometry needs rows of {g.row_length} tokens; "
                            f"set geometry.row_length, or pack the corpus with --seq-len {g.row_length - 1}")
        if len(stream) < self.end_row:
            raise UserError(f"{name}: the window (steps {self.start_step}..{self.end_step}) needs rows "
                            f"up to {self.end_row:,} but the stream holds {len(stream):,} "
                            f"({g.steps_in(len(stream)):,} steps of {g.batch_size}); choose an earlier "
                            f"window, a smaller geometry.total_steps, or the complete stream")

    def heldout_rows(self, num_rows: int, stream_rows: int) -> tuple[range, str]:
        """`num_rows` rows for held-out perplexity and where they lie.

        Rows after the window's end were trained on by no arm ("after"); when the stream has too
        few of them, the rows just before the window's start are used ("before": seen by every arm
        up to the checkpoint alike, so still a fair paired comparison, but not unseen text).
        """
        if stream_rows - self.end_row >= num_rows:
            return range(self.end_row, self.end_row + num_rows), "after"
        if self.start_row >= num_rows:
            return range(self.start_row - num_rows, self.start_row), "before"
        raise UserError(f"heldout_rows={num_rows}: the stream has {stream_rows - self.end_row} rows "
                        f"after the window and {self.start_row} before it; lower heldout_rows")
