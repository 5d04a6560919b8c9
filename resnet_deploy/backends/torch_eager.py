"""Eager PyTorch backend (and torch.compile), the reference every other backend is compared with."""

from __future__ import annotations

import numpy as np

from .base import Runner


class TorchRunner(Runner):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``.

    ``channels_last`` converts model and inputs to NHWC memory format; ``compile`` wraps the model with
    ``torch.compile``; ``device`` is ``cpu`` or ``cuda``.
    """

    def __init__(self, model, device: str = "cpu", channels_last: bool = False, compile: bool = False,
                 threads: int | None = None):
        super().__init__()
        self.model, self.device, self.channels_last, self.compile = model, device, channels_last, compile
        self.threads = threads
        self.name = "torch-compile" if compile else ("eager-channels_last" if channels_last else "eager")
        self._module = None

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        module = self.model
        try:
            module = module.eval()
        except NotImplementedError:  # a torch.export module (bundle.load_eager) is already in eval mode
            pass
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module = torch.compile(module) if self.compile else module

    def _deactivate(self) -> None:
        self._module = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._module(x)
        return y.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def describe(self) -> dict:
        import torch

        return {"name": self.name, "device": self.device, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "channels_last": self.channels_last}


# ----------------------------------------------------------------------------------------------- backend table
def _eager_artifact(manifest: dict, precision) -> str | None:
    """The bundle's eager program (``torch.export``), which runs in fp32 only."""
    from ..layout import Kind
    from .table import first_artifact

    return first_artifact(manifest, Kind.EAGER, "fp32") if str(precision) == "fp32" else None


def _torch_runner(channels_last: bool = False, compile: bool = False):
    def build(bundle, artifact: str, precision, options) -> TorchRunner:
        from ..bundle import load_eager

        return TorchRunner(load_eager(bundle), device=options.device, channels_last=channels_last,
                           compile=compile, threads=options.threads)

    return build


def _backends():
    from .table import BackendSpec

    # eager's graph is the fp32 ONNX graph, which Triton serves with ONNX Runtime
    common = {"artifact": _eager_artifact, "triton_via": "onnxruntime"}
    return (BackendSpec("eager", "cpu", "PyTorch eager, the reference", runner=_torch_runner(), rank=10, **common),
            BackendSpec("eager-channels-last", "cpu", "PyTorch eager, channels_last memory format",
                        runner=_torch_runner(channels_last=True), default=False, rank=11, **common),
            BackendSpec("torch-compile", "cpu", "torch.compile of the eager program", runner=_torch_runner(compile=True),
                        default=False, rank=12, **common))


BACKENDS = _backends()
