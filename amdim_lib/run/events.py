"""TensorBoard events of a run, for watching it live: `tensorboard --logdir runs`.

They are written from the same records as metrics.jsonl, which stays the one source that the notebooks
and tests read: every record of kind K becomes the scalars K/<key> at its step (the NCE terms, the
regulariser, the total loss, the learning rate, the online probes' losses and accuracies, throughput,
the epoch-end test probes), and the run's configuration is shown as text, the first batch's view pairs
as images.

A resumed run's events are rebuilt from its metrics.jsonl, which resuming has cut back to the
checkpoint's step: the curves continue without a repeated or out-of-order step. Events are a view of a
run, never a reason to lose one: a failed write (a full disk, a folder made read-only) is reported once
and the run goes on without them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from .runfolder import RunFolder

_WRITE_ERRORS = (OSError, RuntimeError, ValueError)


class EventLog:
    """The TensorBoard events of one run folder (`enabled`: this process writes them; rank 0 under DDP;
    no folder: none are written)."""

    def __init__(self, folder: str | Path | None, enabled: bool = True):
        self.path = Path(folder) / RunFolder.TENSORBOARD if folder is not None else None
        self.enabled = enabled and folder is not None
        self.writer: SummaryWriter | None = None

    def open(self, records: list[dict] = ()) -> EventLog:
        """Start the events afresh, from the run's records so far (a resumed run's metrics.jsonl)."""
        if self.enabled:
            self._guarded(self._open, list(records))
        return self

    def _open(self, records: list[dict]) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.writer = SummaryWriter(str(self.path), flush_secs=30)
        for record in records:
            self._record(record)

    def record(self, record: dict) -> None:
        """One metrics.jsonl record ({"kind": ..., "step": ..., values}) as scalars kind/key."""
        if self.writer is not None:
            self._guarded(self._record, record)

    def _record(self, record: dict) -> None:
        kind, step = record["kind"], record["step"]
        for key, value in record.items():
            if key in ("kind", "step"):
                continue
            if isinstance(value, dict):  # a skipped step's terms
                for name, inner in value.items():
                    self.writer.add_scalar(f"{kind}/{key}_{name}", float(inner), step)
            elif isinstance(value, list):  # the mixture's component usage
                for index, inner in enumerate(value):
                    self.writer.add_scalar(f"{kind}/{key}_{index}", float(inner), step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def text(self, tag: str, value: dict) -> None:
        """A dict (the configuration) as a JSON block of text."""
        if self.writer is not None:
            self._guarded(lambda: self.writer.add_text(tag, "```\n" + json.dumps(value, indent=1) + "\n```", 0))

    def view_pairs(self, x1: torch.Tensor, x2: torch.Tensor, step: int, pairs: int = 8) -> None:
        """The first `pairs` view pairs of a batch, each view scaled to [0, 1], one pair per row."""
        if self.writer is not None:
            self._guarded(self._view_pairs, x1, x2, step, pairs)

    def _view_pairs(self, x1: torch.Tensor, x2: torch.Tensor, step: int, pairs: int) -> None:
        views = torch.stack([x1[:pairs], x2[:pairs]], 1).flatten(0, 1).detach().float().cpu()
        low = views.amin((1, 2, 3), keepdim=True)
        high = views.amax((1, 2, 3), keepdim=True)
        self.writer.add_images("views/pairs (view 1, view 2)", (views - low) / (high - low).clamp_min(1e-8), step)

    def close(self) -> None:
        if self.writer is not None:
            self._guarded(self.writer.close)
            self.writer = None

    def _guarded(self, write, *args) -> None:
        try:
            write(*args)
        except _WRITE_ERRORS as error:
            warnings.warn(f"TensorBoard events in {self.path} stopped ({error}); the run goes on, with "
                          "metrics.jsonl and checkpoints as before", stacklevel=3)
            self.writer = None
