"""resnet-deploy: export PyTorch residual networks to validated, fused, quantized deploy bundles.

Heavy libraries (torch, onnxruntime, tensorrt) are imported lazily, so ``import resnet_deploy`` is cheap and
works without them.
"""

from .version import __version__


def export(model, out_dir, **kwargs):
    """Export an ``nn.Module`` residual network to a validated bundle; see ``resnet_deploy.pipeline.api.export``."""
    from .pipeline.api import export as _export

    return _export(model, out_dir, **kwargs)


def export_arch(arch, out_dir, **kwargs):
    """Export a torchvision or ``timm/<name>`` ResNet by name; see ``resnet_deploy.pipeline.api.export_arch``."""
    from .pipeline.api import export_arch as _export_arch

    return _export_arch(arch, out_dir, **kwargs)


def export_model(spec, out_dir, **kwargs):
    """Export the module ``FILE.py:FUNCTION`` returns; see ``resnet_deploy.pipeline.api.export_model``."""
    from .pipeline.api import export_model as _export_model

    return _export_model(spec, out_dir, **kwargs)


def load(bundle, backend=None, precision=None, device="cpu", **kwargs):
    """Open a bundle for inference (``model.predict(images)``, ``model(x)``); see
    ``resnet_deploy.deploy.runtime.load``."""
    from .deploy.runtime import load as _load

    return _load(bundle, backend, precision, device, **kwargs)


__all__ = ["__version__", "export", "export_arch", "export_model", "load"]
