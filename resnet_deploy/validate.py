"""Parity metrics between a candidate's outputs and the eager reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# fp32 parity bar from the issue: any broken export is far below it; float noise is far above it.
FP32_MIN_COSINE = 0.99999
FP32_MIN_AGREEMENT = 1.0


@dataclass
class Parity:
    """How closely ``candidate`` logits match the ``reference`` logits.

    ``max_rel_diff`` is the max abs diff divided by the largest reference magnitude (element-wise relative
    differences explode near zero logits); ``cosine`` is the smallest per-sample cosine similarity.
    """

    samples: int
    max_abs_diff: float
    max_rel_diff: float
    cosine: float
    top1_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)

    def passes(self, min_cosine: float, min_agreement: float) -> bool:
        return self.cosine >= min_cosine and self.top1_agreement >= min_agreement


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Parity of two (N, C) logit arrays."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    diff = np.abs(ref - cand)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(denom > 0, (ref * cand).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
    return Parity(
        samples=len(ref),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        cosine=float(cos.min()),
        top1_agreement=float((ref.argmax(1) == cand.argmax(1)).mean()),
    )


def merge(parts: list[Parity]) -> Parity:
    """Worst case over several comparisons (e.g. batch 1 and batch 4)."""
    n = sum(p.samples for p in parts)
    return Parity(
        samples=n,
        max_abs_diff=max(p.max_abs_diff for p in parts),
        max_rel_diff=max(p.max_rel_diff for p in parts),
        cosine=min(p.cosine for p in parts),
        top1_agreement=sum(p.top1_agreement * p.samples for p in parts) / n,
    )


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest logits (``k`` capped at the class count)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def run_batches(runner, data: np.ndarray, batch: int) -> np.ndarray:
    """Run ``data`` through an active runner in chunks of ``batch``."""
    return np.concatenate([runner.infer(data[i:i + batch]) for i in range(0, len(data), batch)])


def parity_at_batches(reference_runner, candidate_runner, data: np.ndarray, batches=(1, 4)) -> dict:
    """Compare two active runners at each batch size; returns per-batch and overall ``Parity`` dicts."""
    return parity_vs_logits({b: run_batches(reference_runner, data, b) for b in batches}, candidate_runner, data)


def parity_vs_logits(reference: dict, candidate_runner, data: np.ndarray) -> dict:
    """Like ``parity_at_batches`` against reference logits already computed per batch size ({batch: logits}),
    so one reference run serves several candidates."""
    per_batch = {b: compare(ref, run_batches(candidate_runner, data, b)) for b, ref in reference.items()}
    return {"overall": merge(list(per_batch.values())), "per_batch": per_batch}
