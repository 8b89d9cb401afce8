"""How long the calibration part of a quantization will take on this machine, said before it starts.

A forward pass costs about 2 floating-point operations per parameter per token; the machine's rate is
measured by a short matrix-multiply probe (:func:`engine.core.devices.probe_flops`; the app runs it in the
device probe's child process). The importance matrix runs ``windows`` windows of
:data:`engine.gguf.imatrix.WINDOW_TOKENS` tokens through the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.gguf.imatrix import WINDOW_TOKENS


@dataclass(frozen=True)
class ImatrixTime:
    """The expected time of an importance matrix, with what it was computed from."""

    seconds: float
    windows: int
    window_tokens: int
    n_params: int
    flops: float  # the rate used
    source: str  # where the rate comes from, in words

    def explain(self) -> str:
        return (f"{self.windows} windows × {self.window_tokens} tokens × 2 × {self.n_params / 1e6:,.1f}M parameters "
                f"at {self.flops / 1e9:,.1f} GFLOP/s, {self.source}")


def imatrix_time(n_params: int, windows: int, flops: float, window_tokens: int = WINDOW_TOKENS,
                 source: str = "from a matrix-multiply probe on this machine") -> ImatrixTime:
    """The expected time of an importance matrix over ``windows`` windows of a model of ``n_params`` parameters."""
    seconds = windows * window_tokens * 2 * n_params / max(flops, 1.0)
    return ImatrixTime(seconds, windows, window_tokens, n_params, flops, source)


def measured_flops(n_params: int, windows: int, seconds: float, window_tokens: int = WINDOW_TOKENS) -> float:
    """The rate an importance matrix run achieved: ``windows`` windows in ``seconds`` (the inverse of
    :func:`imatrix_time`, so a run's own rate predicts the next run of that size exactly)."""
    return windows * window_tokens * 2 * n_params / max(seconds, 1e-9)
