"""The reference every stage validates against, built once per run: the inputs, the eager model's logits per
batch size, and the bars per precision.

A run (``export``, ``quantize``, ``fuse BUNDLE``, ``build BUNDLE``) loads its inputs once: real images when the
user gives them, else seeded standard-normal tensors. Each stage asks the reference for the inputs and eager
logits it compares at, so all stages of one run check against the same data and eager runs once per batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..validate import BARS, Bar

REFERENCE_SAMPLES = 64  # at most this many real images are loaded
RANDOM_SAMPLES = 16  # seeded random inputs when no images are given
PARITY_SAMPLES = 8  # fp32 parity (export, fusion) runs the first 8 inputs ...
PARITY_BATCHES = (1, 4)  # ... at batch 1 and batch 4
EAGER_BATCH = 16


def make_inputs(pre, images: "str | Path | None" = None, *, limit: int | None = REFERENCE_SAMPLES,
                random_samples: int = RANDOM_SAMPLES, seed: int = 0, what: str = "--images"):
    """``(data, labels, description)``: up to ``limit`` preprocessed images (labels from an ImageFolder layout),
    else ``random_samples`` seeded standard-normal inputs (no labels). The one input builder of every stage and
    of the benchmark."""
    if images is not None:
        from ..preprocess import load_images

        imgs = load_images(images, pre, limit=limit, what=what)
        return imgs.data, imgs.labels, imgs.describe(images)
    data = np.random.default_rng(seed).standard_normal((random_samples, 3, *pre.input_size), dtype=np.float32)
    return data, None, f"random:{random_samples} seed={seed} (seeded standard-normal inputs: no images given)"


@dataclass
class Reference:
    """Inputs and the eager model's logits on them; ``eager`` is an ``nn.Module`` (the user's, or the bundle's
    exported program). Logits are computed on first use and cached per (count, batch size)."""

    eager: object
    data: np.ndarray
    description: str
    labels: np.ndarray | None = None
    bars: dict = field(default_factory=lambda: dict(BARS))
    _logits: dict = field(default_factory=dict, repr=False)
    reload: "Callable[[], object] | None" = field(default=None, repr=False)  # rebuilds ``eager`` once let go

    def bar(self, precision) -> Bar:
        return self.bars[str(precision)]

    def inputs(self, n: int | None = None) -> np.ndarray:
        """The first ``n`` inputs (all by default); cycled when ``n`` is larger than the set."""
        if n is None or n <= len(self.data):
            return self.data[:n]
        return np.concatenate([self.data] * -(-n // len(self.data)))[:n]

    def describe(self, n: int | None = None) -> str:
        if n is None or n == len(self.data):
            return self.description
        if n < len(self.data):
            return f"the first {n} of {self.description}"
        return f"{self.description}, repeated to {n}"

    def runner(self):
        """A runner for the reference model: ``eager`` itself when it is a ``Runner`` (e.g. ONNX Runtime on a lone
        graph that has no eager model), else a ``TorchRunner`` over it."""
        from ..backends.base import Runner
        from ..backends.torch_eager import TorchRunner

        eager = self.model()
        return eager if isinstance(eager, Runner) else TorchRunner(eager)

    def model(self):
        """The eager model (reloaded by ``reload`` if it was let go)."""
        if self.eager is None:
            self.eager = self.reload()
        return self.eager

    def let_go_of_model(self, reload: "Callable[[], object]") -> None:
        """Drop the eager module, the largest thing a run holds besides its graphs, once the logits the later
        stages compare with are computed; ``reload()`` (the bundle's ``model.pt2``, whose logits equal the module's
        bit for bit) brings it back should a stage ask for logits not computed yet."""
        self.eager, self.reload = None, reload

    def logits(self, n: int | None = None, batch: int = EAGER_BATCH) -> np.ndarray:
        """Eager logits of ``inputs(n)`` run in chunks of ``batch``."""
        key = (n, batch)
        if key not in self._logits:
            with self.runner() as runner:
                self._logits[key] = validate.run_batches(runner, self.inputs(n), batch)
        return self._logits[key]

    def with_inputs(self, data: np.ndarray, description: str, labels: np.ndarray | None = None) -> "Reference":
        """The same model and bars on other inputs (e.g. the held-out set of the INT8 accuracy gate)."""
        return Reference(self.eager, data, description, labels, self.bars, reload=self.reload)

    def parity(self, runner, n: int = PARITY_SAMPLES, batches=PARITY_BATCHES) -> dict:
        """An active candidate runner against eager on ``inputs(n)`` at each batch size: per-batch and overall
        ``Parity`` (the fp32 check of the export and of every fused graph)."""
        n = min(n, len(self.data))  # compare distinct inputs only
        reference = {b: self.logits(n, b) for b in batches}
        return validate.parity_vs_logits(reference, runner, self.inputs(n))

    def parity_description(self) -> str:
        return self.describe(min(PARITY_SAMPLES, len(self.data)))

    def locate_nonfinite(self, graph=None, n: int = PARITY_SAMPLES) -> str | None:
        """The first module of the eager model with a NaN/Inf output, else the first such node of ``graph`` (an
        ONNX ``ModelProto`` or path): called only when a comparison found non-finite values."""
        from ..backends.base import Runner

        eager = self.model()
        found = None if isinstance(eager, Runner) else first_nonfinite_module(eager, self.inputs(n))
        if found is None and graph is not None:
            found = first_nonfinite_node(graph, self.inputs(n))
        return found


def build_reference(eager, pre, images: "str | Path | None" = None, seed: int = 0,
                    fallback: "tuple[np.ndarray, np.ndarray | None, str] | None" = None,
                    inputs: "tuple[np.ndarray, np.ndarray | None, str] | None" = None) -> Reference:
    """The run's reference: ``inputs`` already loaded (``make_inputs``), else ``images``, else ``fallback`` data
    (the held-out or calibration set a precision run loaded anyway), else seeded random inputs."""
    if inputs is not None:
        data, labels, desc = inputs
    elif images is None and fallback is not None:
        data, labels, desc = fallback
        if len(data) > REFERENCE_SAMPLES:
            data, desc = data[:REFERENCE_SAMPLES], f"the first {REFERENCE_SAMPLES} of {desc}"
            labels = labels[:REFERENCE_SAMPLES] if labels is not None else None
    else:
        data, labels, desc = make_inputs(pre, images, seed=seed)
    return Reference(eager, data, desc, labels)


FLOAT_ELEM_TYPES = (1, 10, 11, 16)  # ONNX FLOAT, FLOAT16, DOUBLE, BFLOAT16


def first_nonfinite_module(model, data: np.ndarray, max_samples: int = 8) -> str | None:
    """The first leaf module (in execution order) whose output holds NaN/Inf, over up to ``max_samples``
    samples one at a time; None when no leaf module's output is non-finite (e.g. a functional op at the end)."""
    import torch

    found: list[str] = []

    def hook(name):
        def fn(module, args, out):
            if not found and isinstance(out, torch.Tensor) and out.is_floating_point() \
                    and not bool(torch.isfinite(out).all()):
                found.append(f"module {name!r} ({type(module).__name__})")
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and not any(m.children())]
    try:
        with torch.inference_mode():
            for i in range(min(len(data), max_samples)):
                model(torch.from_numpy(np.ascontiguousarray(data[i:i + 1], dtype=np.float32)))
                if found:
                    break
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def first_nonfinite_node(model, data: np.ndarray, max_samples: int = 8) -> str | None:
    """The first ONNX node (in graph order) with a NaN/Inf float output, running ``model`` (a ``ModelProto``
    or a path) in ONNX Runtime with every typed intermediate tensor exposed; None when none is found."""
    import onnx

    from ..backends.onnxruntime import graph_outputs
    from ..onnx_graph import expose_outputs, tensor_types

    loaded = not hasattr(model, "graph")
    proto = onnx.load(str(model)) if loaded else model
    try:
        types = tensor_types(proto)
    except Exception:  # noqa: BLE001 - a diagnosis aid: without types there is nothing to expose
        return None
    floats = [o for n in proto.graph.node for o in n.output if o and types.get(o) in FLOAT_ELEM_TYPES]
    proto = expose_outputs(proto, floats, types, in_place=loaded)
    for values in graph_outputs(proto, data[:max_samples], batch=1, graph_level="disable"):
        for node in proto.graph.node:
            if any(o in values and not np.isfinite(values[o]).all() for o in node.output):
                return f"ONNX node {node.name!r} ({node.op_type})"
    return None
