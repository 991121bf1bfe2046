"""Stage-aware progress: turns per-stage step counts into :class:`Progress` reports with a job fraction."""

from __future__ import annotations

import time
from collections.abc import Callable

from .api import STAGES, CancelToken, Progress, ProgressCallback

# Rough share of a job's time per stage (used only for the overall fraction).
STAGE_WEIGHTS = {"preprocess": 0.02, "sparse_structure": 0.12, "shape": 0.35, "texture": 0.2,
                 "decode": 0.11, "export": 0.2}


class Tracker:
    """Reports progress of one job (``assets`` repetitions of the stage list) and times each stage."""

    def __init__(self, on_progress: ProgressCallback | None, cancel: CancelToken | None,
                 assets: int = 1) -> None:
        self.on_progress = on_progress or (lambda _p: None)
        self.cancel = cancel or CancelToken()
        self.assets = max(1, assets)
        self.asset = 0
        self.seconds: dict[str, float] = {}
        self._stage = ""
        self._start = 0.0

    def _fraction(self, stage: str, part: float) -> float:
        done = sum(STAGE_WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])
        within = (done + STAGE_WEIGHTS[stage] * min(max(part, 0.0), 1.0)) / sum(STAGE_WEIGHTS.values())
        return (self.asset + within) / self.assets

    def begin(self, stage: str, message: str = "") -> None:
        """Start ``stage`` (closing the previous one); checks for cancellation.

        Beginning the stage that is already running only reports ``message``.
        """
        if stage == self._stage:
            self.cancel.check()
            self.step(0, 1, message)
            return
        self.end()
        self.cancel.check()
        self._stage, self._start = stage, time.perf_counter()
        self.on_progress(Progress(stage, 0, 1, self._fraction(stage, 0.0), message))

    def step(self, done: int, total: int, message: str = "") -> None:
        self.on_progress(Progress(self._stage, done, total, self._fraction(self._stage, done / max(total, 1)),
                                  message))

    def sub(self, label: str) -> Callable[[int, int], None]:
        """A sampler ``on_step`` callback whose messages carry ``label`` (e.g. "LR pass")."""
        return lambda done, total: self.step(done, total, label)

    def end(self) -> None:
        if self._stage:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._start
            self.on_progress(Progress(self._stage, 1, 1, self._fraction(self._stage, 1.0), "done"))
            self._stage = ""
