"""Load a model: a torchvision or timm ResNet with its published weights, random (seeded) weights, or a checkpoint."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import registry, timm_models
from ..errors import UserError
from ..files import sha256_file

log = logging.getLogger(__name__)

RANDOM = "random"


@dataclass
class LoadedModel:
    """An eval-mode ``nn.Module`` and where its weights came from (recorded in the manifest)."""

    model: object
    arch: str
    num_classes: int
    weights: dict = field(default_factory=dict)  # source, name/path, sha256, seed, warnings

    @property
    def is_random(self) -> bool:
        return self.weights.get("source") == RANDOM


def check_finite_weights(state: dict, source: str) -> None:
    """Refuse weights holding NaN/Inf (a diverged training run): one line naming the first bad tensor."""
    import torch

    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                others = sum(1 for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                             and not bool(torch.isfinite(v).all())) - 1
                more = f" (and {others} more tensor(s))" if others else ""
                raise UserError(f"{source}: tensor {name!r} holds {bad} NaN/Inf value(s){more}: refusing to export "
                                "a model with non-finite weights")


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine weights and running statistics.

    Freshly initialised BatchNorm is almost the identity, so a parity check on such a model proves little
    about BN folding; these ranges keep activations well scaled through deep networks.
    """
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=g))


def replace_classifier(model, num_classes: int, seed: int = 0) -> None:
    """Swap the final Linear layer (``fc``) for a freshly initialised one with ``num_classes`` outputs."""
    import torch

    fc = getattr(model, "fc", None)
    if not isinstance(fc, torch.nn.Linear):
        raise UserError("--num-classes needs a model whose classifier is a Linear layer named 'fc'")
    torch.manual_seed(seed)
    model.fc = torch.nn.Linear(fc.in_features, num_classes)


def _build(arch: str, num_classes: int):
    return timm_models.build(arch, num_classes) if timm_models.is_timm(arch) else registry.build(arch, num_classes)


def _random_model(arch: str, num_classes: int, seed: int) -> LoadedModel:
    import torch

    torch.manual_seed(seed)
    model = _build(arch, num_classes)
    randomize_batchnorm(model, seed)
    return LoadedModel(model.eval(), arch, num_classes, {"source": RANDOM, "seed": seed, "sha256": None})


def _torchvision_weights(arch: str, name: str, num_classes: int, seed: int) -> LoadedModel:
    import torch

    enum = registry.weights_enum(arch)
    short = name.split(".")[-1]
    try:
        weights = enum[short] if short != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ["DEFAULT", *(w.name for w in enum), RANDOM, "PATH"]
        raise UserError(f"unknown weights {name!r} for {arch}: choose one of {', '.join(valid)}") from None
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(weights.url)
    path = cache_dir / filename
    if not path.exists():
        log.info("downloading %s to %s", weights.url, path)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), progress=True)
        except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
            raise UserError(
                f"torchvision weights {enum.__name__}.{weights.name} are not in the torch hub cache ({path}) and "
                f"could not be downloaded ({type(e).__name__}): copy {filename} there, or pass --weights PATH "
                f"or --weights random"
            ) from None
    model = registry.build(arch, 1000)
    state = _read_checkpoint(path)
    check_finite_weights(state, f"weights {str(path)!r}")
    model.load_state_dict(state)
    if num_classes != 1000:
        replace_classifier(model, num_classes, seed)
        log.warning("classifier replaced: %d classes, untrained head", num_classes)
    info = {"source": "torchvision", "name": f"{enum.__name__}.{weights.name}", "path": str(path),
            "sha256": sha256_file(path), "classifier_replaced": num_classes != 1000}
    return LoadedModel(model.eval(), arch, num_classes, info)


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"weights file {str(path)!r} is a .safetensors file: pip install safetensors "
                        "(it comes with resnet-deploy[timm])") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"weights file {str(path)!r} is not a readable safetensors file: {first}") from None


def _read_checkpoint(path: Path) -> dict:
    """Read a state dict from a checkpoint file with ``weights_only=True`` (or a ``.safetensors`` file),
    unwrapping common containers."""
    import torch

    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist (or pass --weights DEFAULT or random)")
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle garbage, wrong format: all user errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"weights file {str(path)!r} is not a readable PyTorch checkpoint: {first}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"weights file {str(path)!r} holds no state_dict (expected a dict of tensors, or one under "
            f"'state_dict' or 'model')"
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def classifier_prefix(model) -> str | None:
    """The state-dict prefix of the classifier: timm's ``get_classifier()`` (``fc.`` or ``head.fc.``), a Linear
    named ``fc`` (torchvision), else the Linear / Conv that owns the last parameter (a custom module's head)."""
    import torch

    prefix = timm_models.classifier_prefix(model)
    if prefix is not None:
        return prefix
    if isinstance(getattr(model, "fc", None), torch.nn.Linear):
        return "fc."
    last = next(reversed([name for name, _ in model.named_parameters()]), None)
    if last is None or "." not in last:
        return None
    owner = last.rsplit(".", 1)[0]
    module = dict(model.named_modules()).get(owner)
    return f"{owner}." if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) else None


def load_state_dict_checked(model, state: dict, source: str, what: str = "this arch") -> None:
    """``load_state_dict`` with an error naming up to five missing/unexpected keys and every shape mismatch; a
    mismatch only in the classifier says which ``--num-classes`` the checkpoint has."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        model.load_state_dict(state)
        return
    head = classifier_prefix(model)
    fc_only = head and not missing and not unexpected and shapes and all(k.startswith(head) for k, _, _ in shapes)
    if fc_only and f"{head}weight" in own:
        n = state[f"{head}weight"].shape[0] if f"{head}weight" in state else shapes[0][1][0]
        raise UserError(
            f"checkpoint {source} has a classifier ({head}weight) with {n} classes but the model has "
            f"{own[f'{head}weight'].shape[0]}: pass --num-classes {n}"
        )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if unexpected:
        more = ", ..." if len(unexpected) > 5 else ""
        parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:5])}{more})")
    if shapes:
        listed = ", ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:5])
        parts.append(f"shape mismatch {listed}{f' (+{len(shapes) - 5} more)' if len(shapes) > 5 else ''}")
    raise UserError(f"checkpoint {source} does not fit {what}: " + "; ".join(parts))


def _checkpoint_model(arch: str, path: Path, num_classes: int) -> LoadedModel:
    state = _read_checkpoint(path)
    check_finite_weights(state, f"weights file {str(path)!r}")
    model = _build(arch, num_classes)
    load_state_dict_checked(model, state, repr(str(path)))
    info = {"source": "checkpoint", "path": str(path), "sha256": sha256_file(path)}
    return LoadedModel(model.eval(), arch, num_classes, info)


def _timm_weights(arch: str, name: str, num_classes: int) -> LoadedModel:
    model, info = timm_models.load_pretrained(arch, None if name == "DEFAULT" else name, num_classes)
    check_finite_weights(model.state_dict(), f"timm weights {info['name']}")
    return LoadedModel(model.eval(), arch, num_classes, info)


def _is_weights_name(weights: str) -> bool:
    """DEFAULT, a torchvision weights name or a timm tag, rather than a checkpoint path."""
    path = Path(weights).expanduser()
    if path.exists():
        return False
    return weights == "DEFAULT" or ("/" not in weights and not path.suffix) or weights.split(".")[0].endswith("_Weights")


def preprocessing_for(arch: str, weights: str = RANDOM, input_size=None, resize=None, mean=None, std=None,
                      interpolation=None):
    """The preprocessing of ``arch``: torchvision's ImageNet defaults, or timm's pretrained config (of the tag
    named by ``weights``, else the default one); every given option overrides its field."""
    from ..preprocess import make_preprocessing

    if timm_models.is_timm(arch):
        registry.check_arch(arch)
        tag = weights if weights not in (RANDOM, "DEFAULT") and _is_weights_name(weights) else None
        return timm_models.preprocessing(arch, input_size, resize, mean, std, interpolation, tag)
    return make_preprocessing(input_size, resize, mean, std, interpolation or "bilinear")


def model_info(arch: str) -> dict | None:
    """What the manifest records about where a timm architecture came from (None for torchvision)."""
    if not timm_models.is_timm(arch):
        return None
    timm = timm_models.require()
    return {"family": "timm", "name": arch[len(timm_models.PREFIX):], "timm_version": timm.__version__}


def load_model(arch: str, weights: str = RANDOM, num_classes: int = 1000, seed: int = 0) -> LoadedModel:
    """Build ``arch`` (a torchvision name or ``timm/<name>``) and load ``weights``: ``random``, ``DEFAULT``, a
    torchvision weights name or timm pretrained tag, or a checkpoint PATH."""
    registry.check_arch(arch)
    if num_classes < 1:
        raise UserError(f"--num-classes {num_classes} must be >= 1")
    if weights == RANDOM:
        return _random_model(arch, num_classes, seed)
    path = Path(weights).expanduser()
    if _is_weights_name(weights):
        if timm_models.is_timm(arch):
            return _timm_weights(arch, weights, num_classes)
        return _torchvision_weights(arch, weights, num_classes, seed)
    return _checkpoint_model(arch, path, num_classes)
