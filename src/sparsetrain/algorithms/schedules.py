"""Schedules: plain callables of the step number, like LR-scheduler lambdas (state is the step only)."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _check_fraction(value: float, name: str, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UpdateSchedule:
    """Mask updates every ``interval`` steps while ``step < stop_step`` (RigL's Delta-T and T_end)."""

    interval: int
    stop_step: int

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"update_interval must be an integer >= 1, got {self.interval!r}")

    def due(self, step: int) -> bool:
        """True if the mask is updated after optimizer step ``step`` (1-based)."""
        return step > 0 and step % self.interval == 0 and step < self.stop_step


@dataclass(frozen=True)
class CosineDecay:
    """RigL's drop fraction: ``alpha / 2 * (1 + cos(pi * step / end_step))``, 0 from ``end_step`` on."""

    alpha: float
    end_step: int

    def __post_init__(self) -> None:
        _check_fraction(self.alpha, "drop_fraction")
        if self.end_step < 1:
            raise ValueError(f"end step must be >= 1 (total_steps * stop_fraction), got {self.end_step!r}")

    def __call__(self, step: int) -> float:
        if step >= self.end_step:
            return 0.0
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / self.end_step))


@dataclass(frozen=True)
class Constant:
    """A constant drop fraction (SET's original schedule)."""

    alpha: float

    def __call__(self, step: int) -> float:
        return self.alpha


@dataclass(frozen=True)
class CubicSparsity:
    """Zhu & Gupta's gradual pruning: ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3``.

    Returns a *density* (1 - sparsity): ``initial`` before and at ``start``, ``final`` from ``end``.
    """

    initial: float
    final: float
    start: int
    end: int

    def __post_init__(self) -> None:
        _check_fraction(self.initial, "initial_density", low_open=True)
        _check_fraction(self.final, "density", low_open=True)
        if self.final > self.initial:
            raise ValueError(f"density ({self.final}) must not exceed initial_density ({self.initial})")
        if not (0 <= self.start <= self.end):
            raise ValueError(f"need 0 <= start_step <= end_step, got start_step={self.start}, end_step={self.end}")

    def __call__(self, step: int) -> float:
        if step <= self.start:
            return self.initial
        if step >= self.end:
            return self.final
        s_i, s_f = 1.0 - self.initial, 1.0 - self.final
        p = (step - self.start) / (self.end - self.start)
        return 1.0 - (s_f + (s_i - s_f) * (1.0 - p) ** 3)
