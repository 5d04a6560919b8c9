"""timm's ResNet family by name (``--arch timm/<name>``): which names, their preprocessing, and their weights.

Accepted: every model that timm registers from its ``resnet`` and ``resnetv2`` modules (ResNet / ResNeXt,
ResNet-C/D/S/T stems and average-pool shortcuts, SE-ResNe(X)t, ECA-ResNet, ResNet-RS, anti-aliased and blur-pool
variants, pre-activation ResNet-V2), except those whose normalisation is not BatchNorm (GroupNorm ``_gn``,
BiT's ``_bit`` with weight-standardised convs, ``_frn``, ``_evos``) and timm's own ``test_resnet``: the fusion
passes and the INT8 placement are written and tested for BatchNorm residual networks, and a model they were never
checked on should fail at the door, not after minutes of export.

timm is an optional extra (``pip install 'resnet-deploy[timm]'``) and is imported only inside functions.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from ..errors import MissingDependency, UserError

log = logging.getLogger(__name__)

PREFIX = "timm/"
MODULES = ("resnet", "resnetv2")
NOT_BATCHNORM = ("_gn", "_bit", "_frn", "_evos")  # GroupNorm, BiT (GroupNorm + StdConv), FilterResponseNorm, EvoNorm
EXCLUDED = ("test_resnet",)  # timm's tiny model for its own unit tests


def is_timm(arch: str) -> bool:
    return str(arch).startswith(PREFIX)


def require():
    """The ``timm`` module, or the one-line error naming the extra."""
    try:
        import timm
    except ImportError:
        raise MissingDependency("timm", "timm", "timm/... architectures") from None
    return timm


def available() -> bool:
    try:
        require()
    except MissingDependency:
        return False
    return True


def names() -> list[str]:
    """The accepted architectures, ``timm/<name>``, in timm's order."""
    timm = require()
    refused = [*EXCLUDED, *(f"*{part}*" for part in NOT_BATCHNORM)]
    return [PREFIX + name for name in timm.list_models(module=list(MODULES), exclude_filters=refused)]


def check_arch(arch: str) -> str:
    """The bare timm name of ``timm/<name>``; an unknown name gets the closest accepted ones."""
    valid = names()
    if arch in valid:
        return arch[len(PREFIX):]
    close = difflib.get_close_matches(arch, valid, n=5, cutoff=0.6) or valid[:5]
    raise UserError(f"unknown arch {arch!r}: choose one of {', '.join(close)}, ... ({len(valid)} timm names: "
                    "resnet-deploy export --list-archs)")


def _pretrained_cfg(name: str, tag: str | None = None):
    from timm.models import get_pretrained_cfg

    if tag is not None and tag not in tags(name):
        raise UserError(f"unknown weights {tag!r} for {PREFIX}{name}: choose one of "
                        f"{', '.join(['DEFAULT', *tags(name), 'random', 'PATH'])}")
    cfg = get_pretrained_cfg(f"{name}.{tag}" if tag else name)
    if cfg is None:  # a model timm registers without any pretrained config
        raise UserError(f"timm has no pretrained weights for {PREFIX}{name}: pass --weights random or PATH")
    return cfg


def tags(name: str) -> list[str]:
    """timm's pretrained weight tags for ``name`` (e.g. ``a1_in1k``)."""
    timm = require()
    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{name}.*")]


def data_config(arch: str, tag: str | None = None) -> dict:
    """timm's eval preprocessing for the model (its default pretrained tag, or ``tag``): input size, crop fraction,
    interpolation, mean and std, as ``timm.data.resolve_data_config`` resolves them."""
    require()
    from timm.data import resolve_data_config

    name = check_arch(arch)
    cfg = resolve_data_config(pretrained_cfg=_pretrained_cfg(name, tag).to_dict())
    return {"input_size": tuple(cfg["input_size"][1:]), "crop_pct": float(cfg.get("crop_pct") or 0.875),
            "interpolation": cfg.get("interpolation", "bilinear"), "mean": tuple(cfg["mean"]),
            "std": tuple(cfg["std"]), "crop_mode": cfg.get("crop_mode", "center")}


def preprocessing(arch: str, input_size=None, resize=None, mean=None, std=None, interpolation=None,
                  tag: str | None = None):
    """The model's own preprocessing (timm's pretrained config), each field overridable by the user's option.

    A timm config's filter other than bilinear / bicubic, or a crop mode other than ``center``, is refused here
    rather than silently replaced: the bundle must say what was really done.
    """
    from ..preprocess import make_preprocessing

    cfg = data_config(arch, tag)
    interp = interpolation or cfg["interpolation"]
    if interpolation is None and interp not in ("bilinear", "bicubic"):
        raise UserError(f"{arch}: timm's config says interpolation {interp!r}, which this pipeline does not "
                        "implement: pass --interpolation bilinear or bicubic")
    if cfg["crop_mode"] != "center" and resize is None:
        raise UserError(f"{arch}: timm's config says crop mode {cfg['crop_mode']!r}; this pipeline resizes the "
                        "shorter side and center-crops: pass --resize to accept that")
    size = input_size if input_size is not None else "x".join(str(v) for v in cfg["input_size"])
    return make_preprocessing(size, resize, mean, std, interp, cfg["crop_pct"], cfg["mean"], cfg["std"])


def build(arch: str, num_classes: int = 1000):
    """An untrained timm model (timm's own initialisation)."""
    timm = require()
    return timm.create_model(check_arch(arch), pretrained=False, num_classes=num_classes)


def classifier_prefix(model) -> str | None:
    """The state-dict prefix of the classifier (``fc.`` or ``head.fc.`` in timm)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return None
    for name, module in model.named_modules():
        if module is head:
            return f"{name}."
    return None


def _hub_file(cfg) -> "Path | None":
    """The cached weights file of a timm pretrained config, when the Hugging Face cache holds it."""
    if not getattr(cfg, "hf_hub_id", None):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def load_pretrained(arch: str, tag: str | None, num_classes: int) -> tuple[object, dict]:
    """timm's pretrained weights (``tag`` None: its default), from the hub cache or downloaded; an unreachable
    hub is one line saying what to do."""
    timm = require()
    from ..files import sha256_file

    name = check_arch(arch)
    cfg = _pretrained_cfg(name, tag)
    full = f"{name}.{cfg.tag}" if getattr(cfg, "tag", None) else name
    where = f"Hugging Face hub {cfg.hf_hub_id}" if getattr(cfg, "hf_hub_id", None) else (cfg.url or "its URL")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would break the one-line error
    try:
        model = timm.create_model(full, pretrained=True, num_classes=num_classes)
    except Exception as e:  # noqa: BLE001 - offline hub, missing cache, HTTP errors: all mean the same to the user
        from huggingface_hub import constants

        raise UserError(f"timm weights {full} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                        f"could not be downloaded from {where} ({type(e).__name__}): pass --weights PATH "
                        "(a state_dict or .safetensors file) or --weights random") from None
    finally:
        hub_log.setLevel(level)
    path = _hub_file(cfg)
    info = {"source": "timm", "name": full, "hub": getattr(cfg, "hf_hub_id", None) or cfg.url,
            "path": str(path) if path else None, "sha256": sha256_file(path) if path else None,
            "classifier_replaced": num_classes != cfg.num_classes}
    if info["classifier_replaced"]:
        log.warning("classifier replaced: %d classes, untrained head", num_classes)
    return model, info
