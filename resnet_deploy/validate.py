"""Parity metrics between a candidate's outputs and the eager reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .errors import CheckFailed

@dataclass(frozen=True)
class Bar:
    """What a candidate must reach against the eager reference: the top-1 agreement (a fraction) and the largest
    absolute logit difference relative to the spread of the reference logits (``Parity.spread_error``); a smallest
    per-sample cosine only where set. Cosine alone is a fragile gate: on small, few-class logits a harmless
    rounding moves it far (a 2-class fp16 graph with full agreement fell below the old cosine bar; docs/precision.md),
    so it stays in every report but gates nothing by default."""

    min_top1_agreement: float
    max_spread_error: float
    min_cosine: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "Bar":
        """Back from ``to_dict``; a record written before the spread bar existed (cosine + agreement only) keeps
        its cosine and gets no spread limit."""
        return cls(float(d["min_top1_agreement"]), float(d.get("max_spread_error", math.inf)),
                   None if d.get("min_cosine") is None else float(d["min_cosine"]))

    def describe(self) -> str:
        parts = [f"top-1 agreement >= {self.min_top1_agreement:.0%}", f"spread error <= {self.max_spread_error:g}"]
        return ", ".join(parts + ([f"cosine >= {self.min_cosine}"] if self.min_cosine is not None else []))


# The one table of bars per precision (docs/precision.md quotes it). spread error = max |candidate - eager| / std
# of the eager logits: how far any logit moved, in units of the logits' own spread, whatever their scale.
# The spread errors each precision really reaches are measured in benchmarks/results/bar_survey.md (random-weight
# ResNets on real inputs). fp32 keeps its cosine bar too (float noise cannot move it); fp16 / bf16 sit well above
# the largest error measured, and a graph missing them falls back node by node to fp32; int8 is a sanity bar for
# plans and parity records (INT8 accuracy proper is the precision stage's budget).
BARS = {
    "fp32": Bar(min_top1_agreement=1.0, max_spread_error=1e-3, min_cosine=0.99999),
    "fp16": Bar(min_top1_agreement=0.99, max_spread_error=0.05),
    "bf16": Bar(min_top1_agreement=0.97, max_spread_error=0.2),
    "int8": Bar(min_top1_agreement=0.75, max_spread_error=1.0),
}
FP32_MIN_COSINE = BARS["fp32"].min_cosine


@dataclass
class Parity:
    """How closely ``candidate`` logits match the ``reference`` logits.

    ``max_rel_diff`` is the max abs diff divided by the largest reference magnitude (element-wise relative
    differences explode near zero logits); ``spread_error`` is the max abs diff divided by the standard deviation
    of all reference logits (the gate's error: scale-free, and meaningful for small or few-class logits);
    ``cosine`` is the smallest per-sample cosine similarity (reported; gates only where a ``Bar`` sets it).
    ``nonfinite`` says which side produced NaN/Inf (None when both are finite): such a comparison never passes,
    and its metrics are NaN (``null`` in JSON), never a lucky 1.0.
    """

    samples: int
    max_abs_diff: float
    max_rel_diff: float
    cosine: float
    top1_agreement: float
    nonfinite: str | None = None
    spread_error: float = math.nan

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Parity":
        """Back from ``to_dict`` (or a validation record holding its keys); null or absent metrics become NaN."""
        nan = float("nan")
        return cls(int(d["samples"]), *(nan if d.get(k) is None else float(d[k]) for k in
                                        ("max_abs_diff", "max_rel_diff", "cosine", "top1_agreement")),
                   d.get("nonfinite"), nan if d.get("spread_error") is None else float(d["spread_error"]))

    def meets(self, bar: Bar) -> bool:
        """Finite, and at or inside every limit of ``bar`` (NaN metrics never pass)."""
        return (self.nonfinite is None and self.top1_agreement >= bar.min_top1_agreement
                and self.spread_error <= bar.max_spread_error
                and (bar.min_cosine is None or self.cosine >= bar.min_cosine))


def nonfinite_summary(values: np.ndarray, side: str) -> str | None:
    """``"<side> output has 3 NaN and 0 Inf values in 2 of 8 samples"``, or None when all values are finite."""
    arr = np.asarray(values)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    rows = int(bad.reshape(len(arr), -1).any(axis=1).sum()) if arr.ndim else 1
    return (f"{side} output has {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} Inf values in {rows} "
            f"of {len(arr) if arr.ndim else 1} samples")


def compare(reference: np.ndarray, candidate: np.ndarray, reference_name: str = "eager",
            candidate_name: str = "candidate") -> Parity:
    """Parity of two (N, C) logit arrays. NaN/Inf on either side is named in ``nonfinite`` and fails."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    bad = [m for m in (nonfinite_summary(ref, reference_name), nonfinite_summary(cand, candidate_name)) if m]
    if bad:
        nan = float("nan")
        return Parity(len(ref), nan, nan, nan, float((ref.argmax(1) == cand.argmax(1)).mean()), "; ".join(bad))
    diff = np.abs(ref - cand)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(denom > 0, (ref * cand).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
    return Parity(
        samples=len(ref),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        cosine=float(cos.min()),
        top1_agreement=float((ref.argmax(1) == cand.argmax(1)).mean()),
        spread_error=spread_error(ref, float(diff.max())),
    )


def spread_error(reference: np.ndarray, max_abs_diff: float) -> float:
    """``max_abs_diff`` in units of the standard deviation of the reference logits (all samples and classes).
    Constant reference logits have no spread: any difference is then infinitely large, none is 0."""
    std = float(np.std(np.asarray(reference, dtype=np.float64)))
    if std > 0:
        return max_abs_diff / std
    return 0.0 if max_abs_diff == 0 else math.inf


def merge(parts: list[Parity]) -> Parity:
    """Worst case over several comparisons (e.g. batch 1 and batch 4)."""
    n = sum(p.samples for p in parts)
    nonfinite = "; ".join(dict.fromkeys(p.nonfinite for p in parts if p.nonfinite)) or None
    if nonfinite:
        nan = float("nan")
        return Parity(n, nan, nan, nan, sum(p.top1_agreement * p.samples for p in parts) / n, nonfinite)
    return Parity(
        samples=n,
        max_abs_diff=max(p.max_abs_diff for p in parts),
        max_rel_diff=max(p.max_rel_diff for p in parts),
        cosine=min(p.cosine for p in parts),
        top1_agreement=sum(p.top1_agreement * p.samples for p in parts) / n,
        spread_error=max(p.spread_error for p in parts),
    )


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest logits (``k`` capped at the class count); a row
    holding NaN/Inf is a miss, whatever its argmax."""
    k = min(k, logits.shape[1])
    finite = np.isfinite(logits).all(axis=1)
    top = np.argsort(-np.nan_to_num(logits), axis=1)[:, :k]
    return float(((top == labels[:, None]).any(axis=1) & finite).mean())


def run_batches(runner, data: np.ndarray, batch: int) -> np.ndarray:
    """Run ``data`` through an active runner in chunks of ``batch``."""
    return np.concatenate([runner.infer(data[i:i + batch]) for i in range(0, len(data), batch)])


def parity_vs_logits(reference: dict, candidate_runner, data: np.ndarray) -> dict:
    """Compare an active runner at each batch size with reference logits already computed per batch size
    ({batch: logits}), so one reference run serves several candidates; per-batch and overall ``Parity``."""
    per_batch = {b: compare(ref, run_batches(candidate_runner, data, b)) for b, ref in reference.items()}
    return {"overall": merge(list(per_batch.values())), "per_batch": per_batch}


def failure_message(what: str, parity: Parity, bar: Bar, where: str | None = None) -> str:
    """The one message for a comparison that misses its bar (or is not finite); ``where`` names the first
    non-finite node or module when known."""
    if parity.nonfinite:
        return f"{what}: not finite: {parity.nonfinite}" + (f" (first non-finite output: {where})" if where else "")
    cosine = f", cosine {parity.cosine:.7f}" + (f" (needs >= {bar.min_cosine})" if bar.min_cosine is not None else "")
    return (f"{what}: parity broken: top-1 agreement {parity.top1_agreement:.1%} (needs >= "
            f"{bar.min_top1_agreement:.0%}), spread error {parity.spread_error:.3g} (max abs diff "
            f"{parity.max_abs_diff:.3g}; needs <= {bar.max_spread_error:g}){cosine}")


def require_parity(what: str, parity: Parity, bar: Bar, where: "Callable[[], str | None] | None" = None) -> None:
    """Raise ``CheckFailed`` (exit 1, one line ending in "nothing written") unless ``parity`` meets ``bar``.

    ``where`` is called only on a non-finite failure, to name the first node or module that produced NaN/Inf.
    """
    if parity.meets(bar):
        return
    located = where() if (where is not None and parity.nonfinite) else None
    raise CheckFailed(failure_message(what, parity, bar, located) + "; nothing written")
