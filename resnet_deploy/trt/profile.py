"""The optimization profile's batch sizes: parsed once, shared by the build stage, the plan runner and ONNX Runtime's
TensorRT execution provider; and the graph input a profile is made for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_BATCH = "1:8:32"
REBUILD = "rebuild with resnet-deploy build"


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile's batch sizes."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: "str | BatchProfile") -> "BatchProfile":
        """``MIN:OPT:MAX`` (or one number N for N:N:N) with 1 <= MIN <= OPT <= MAX."""
        if isinstance(text, BatchProfile):
            return text
        parts = str(text).strip().split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            nums = nums * 3
        if len(nums) != 3 or not 1 <= nums[0] <= nums[1] <= nums[2]:
            raise UserError(f"--batch {text!r} is invalid: use MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. "
                            f"{DEFAULT_BATCH}")
        return cls(*nums)

    def shapes(self, input_shape) -> dict:
        """min/opt/max input shapes from an NCHW shape whose batch is dynamic (-1, 0, None or a name)."""
        rest = [int(d) for d in list(input_shape)[1:]]
        if any(d <= 0 for d in rest):
            raise UserError(f"input shape {list(input_shape)} has dynamic dimensions besides the batch: "
                            "TensorRT plans here need fixed C, H, W")
        return {k: [getattr(self, k), *rest] for k in ("min", "opt", "max")}

    def check(self, batch: int, plan: str = "plan") -> None:
        """A batch outside the profile is refused with one line (TensorRT would fail on it)."""
        if not self.min <= int(batch) <= self.max:
            raise UserError(f"batch {batch} is outside the profile of {plan} ({self.min}..{self.max}, "
                            f"--batch {self}): use a batch in range or {REBUILD} --batch MIN:OPT:MAX")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def onnx_input(onnx_path: "str | Path") -> tuple[str, list, int]:
    """Name and shape of the graph's first input (dynamic dims as -1) and its node count."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inp = next(i for i in proto.graph.input if i.name not in inits)
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    return inp.name, shape, len(proto.graph.node)
