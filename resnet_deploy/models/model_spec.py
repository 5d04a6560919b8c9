"""Your own model from the CLI: ``--model path/to/file.py:FUNCTION`` or ``--model package.module:FUNCTION``.

FUNCTION returns an ``nn.Module`` whose output is (N, C) logits. The class count: when ``--num-classes`` is
given and FUNCTION takes a ``num_classes`` argument (or ``**kwargs``), it is passed as ``num_classes=N``; when
FUNCTION takes no such argument, the module's own output size must equal N. Without ``--num-classes``, FUNCTION is
called with no arguments and C is read from the output. Every failure is one line naming the spec.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import sha256_file

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value: a file or an importable module, and the function in it."""

    spec: str
    function: str
    path: Path | None = None  # a .py file
    module: str | None = None  # a dotted module name

    def describe(self) -> dict:
        """What the manifest records: the spec, and the source file with its sha256."""
        source = self.path if self.path is not None else _module_file(self.module)
        return {"spec": self.spec, "function": self.function, "module": self.module,
                "source_file": str(source) if source else None,
                "source_sha256": sha256_file(source) if source and source.is_file() else None}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def parse(spec: str) -> ModelSpec:
    """Split ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``; a malformed value is a one-line error."""
    left, sep, func = str(spec).rpartition(":")
    if not sep or not left or not func.isidentifier():
        raise UserError(f"--model {spec!r} must be path/to/file.py:FUNCTION or package.module:FUNCTION")
    if left.endswith(".py") or "/" in left or "\\" in left:
        path = Path(left).expanduser()
        if not path.is_file():
            raise UserError(f"--model file {left!r} does not exist")
        return ModelSpec(spec, func, path=path.resolve())
    if not _MODULE.fullmatch(left):
        raise UserError(f"--model {spec!r}: {left!r} is neither a .py file nor a dotted module name")
    return ModelSpec(spec, func, module=left)


def _module_file(name: str | None) -> Path | None:
    mod = sys.modules.get(name) if name else None
    f = getattr(mod, "__file__", None)
    return Path(f).resolve() if f else None


def load_function(ms: ModelSpec):
    """Import the file or module and return FUNCTION; import errors are reported by their first line."""
    try:
        if ms.path is not None:
            name = f"resnet_deploy_user_{abs(hash(str(ms.path)))}"
            spec = importlib.util.spec_from_file_location(name, ms.path)
            module = importlib.util.module_from_spec(spec)
            # the file's folder on sys.path while it runs, so that it can import its neighbours
            sys.path.insert(0, str(ms.path.parent))
            try:
                spec.loader.exec_module(module)
            finally:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(ms.path.parent))
        else:
            module = importlib.import_module(ms.module)
    except ModuleNotFoundError as e:
        if ms.module is not None and e.name and ms.module.startswith(e.name):
            raise UserError(f"--model {ms.spec!r}: no module named {ms.module!r}") from None
        raise UserError(f"--model {ms.spec!r} does not import: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - whatever the user's file raises at import time (SyntaxError too)
        raise UserError(f"--model {ms.spec!r} does not import: {_first_line(e)}") from None
    fn = getattr(module, ms.function, None)
    if fn is None:
        there = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" (functions there: {', '.join(there[:8])})" if there else ""
        raise UserError(f"--model {ms.spec!r}: no function {ms.function!r} in {ms.path or ms.module}{hint}")
    if not callable(fn):
        raise UserError(f"--model {ms.spec!r}: {ms.function!r} is a {type(fn).__name__}, not a function")
    return fn


def accepts_num_classes(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def output_classes(model, spec: str, input_size: tuple[int, int]) -> int:
    """C of the module's (N, C) output on a (2, 3, H, W) probe; any other output is a one-line error."""
    import torch

    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, *input_size))
    except Exception as e:  # noqa: BLE001 - the user's forward
        raise UserError(f"--model {spec!r}: forward on a (2, 3, {input_size[0]}, {input_size[1]}) input failed: "
                        f"{_first_line(e)}") from None
    if not isinstance(out, torch.Tensor):
        raise UserError(f"--model {spec!r} returns a {type(out).__name__}; it must return one (N, C) logits tensor")
    if out.ndim != 2 or out.shape[0] != 2:
        raise UserError(f"--model {spec!r} output has shape {tuple(out.shape)} for a batch of 2; it must be (N, C) "
                        "logits")
    return int(out.shape[1])


def build(ms: ModelSpec, num_classes: int | None, input_size: tuple[int, int], seed: int = 0,
          reinit: bool = False):
    """Call FUNCTION (seeded) and check what it returns; returns ``(module, num_classes, passed_num_classes)``.

    ``reinit`` re-initialises every submodule that has ``reset_parameters`` (``--weights random``), so that the
    weights are seeded whatever FUNCTION did.
    """
    import torch

    fn = load_function(ms)
    passed = num_classes is not None and accepts_num_classes(fn)
    torch.manual_seed(seed)
    try:
        model = fn(num_classes=num_classes) if passed else fn()
    except Exception as e:  # noqa: BLE001 - the user's function
        raise UserError(f"--model {ms.spec!r}: {ms.function}() raised {_first_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"--model {ms.spec!r}: {ms.function}() returned {type(model).__name__}, not a "
                        "torch.nn.Module")
    if reinit:
        torch.manual_seed(seed)
        for m in model.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
    classes = output_classes(model, ms.spec, input_size)
    if num_classes is not None and classes != num_classes:
        why = "" if passed else f" and {ms.function}() takes no num_classes argument"
        raise UserError(f"--num-classes {num_classes} but --model {ms.spec!r} outputs {classes} classes{why}")
    return model.eval(), classes, passed
