"""A toy backend in one file, as a user would add one: ONNX Runtime over the fp32 portable graph with graph
optimizations off, served by Triton as its own model. Nothing else in the tool is edited: the test loads it with
``RESNET_DEPLOY_BACKENDS=tests.toy_backend`` and it must show up in ``bench``, ``recommended`` and ``triton``."""

from __future__ import annotations

from pathlib import Path

from resnet_deploy import layout
from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from resnet_deploy.backends.table import BackendSpec, TritonFiles, TritonServing, first_artifact
from resnet_deploy.errors import UserError


def artifact(manifest: dict, precision) -> str | None:
    return first_artifact(manifest, layout.Kind.ONNX, precision, ("portable",)) if str(precision) == "fp32" else None


def runner(bundle, name: str, precision, options) -> OnnxRuntimeRunner:
    r = OnnxRuntimeRunner(Path(bundle) / name, graph_level="disable", threads=options.threads)
    r.name = "toy"
    return r


def triton_files(bundle, manifest: dict, precision, concurrent: bool) -> TritonFiles:
    name = artifact(manifest, precision)
    if name is None:
        raise UserError(f"bundle {str(bundle)!r} has no {precision} graph for the toy backend")
    return TritonFiles({name: layout.TRITON_ONNX}, [name])


BACKENDS = (BackendSpec("toy", "cpu", "toy: ONNX Runtime without graph optimizations", artifact=artifact, runner=runner,
                        triton=TritonServing("onnxruntime_onnx", "toy", label="Toy",
                                             artifacts=lambda m, p: [n for n in [artifact(m, p)] if n],
                                             stage=triton_files)),)
