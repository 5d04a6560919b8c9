"""`import resnet_deploy`, every submodule and `--help` of every command work without TensorRT / onnxruntime-gpu /
OpenVINO."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"tensorrt", "tensorrt_libs", "tensorrt_bindings", "pycuda", "cuda", "onnxruntime_gpu", "openvino",
               "nncf"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for the test: {name}")
    sys.meta_path.insert(0, Block())
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_import_is_light_and_all_submodules_import():
    r = run_python("""
        import sys, importlib, pkgutil
        import resnet_deploy
        assert "torch" not in sys.modules and "onnxruntime" not in sys.modules, "import resnet_deploy is not lazy"
        for m in pkgutil.walk_packages(resnet_deploy.__path__, "resnet_deploy."):
            if m.name != "resnet_deploy.__main__":
                importlib.import_module(m.name)
        assert "tensorrt" not in sys.modules
        assert callable(resnet_deploy.export), "a submodule shadows the public export() function"
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


def test_help_of_every_command_without_gpu_packages():
    r = run_python("""
        from resnet_deploy.cli.main import cli, main
        for name in [None, *cli.commands]:
            argv = ([name] if name else []) + ["--help"]
            assert main(argv) == 0, argv
        print("commands:", ",".join(sorted(cli.commands)))
    """)
    assert r.returncode == 0, r.stderr
    assert "export" in r.stdout and "info" in r.stdout


def test_openvino_backend_without_openvino_names_the_extra():
    r = run_python("""
        from resnet_deploy.backends.openvino import OpenVinoRunner, bf16_supported
        from resnet_deploy.errors import MissingDependency
        runner = OpenVinoRunner("model.onnx", hint="throughput", precision="f32")  # options check without openvino
        for call in (runner.activate, bf16_supported):
            try:
                call()
            except MissingDependency as e:
                print(e)
            else:
                raise SystemExit("no MissingDependency")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["openvino is not installed for OpenVINO inference: install it with pip install "
                                     "'resnet-deploy[openvino]'"] * 2


GENERIC_METAVARS = {"TEXT", "INTEGER", "INTEGER RANGE", "FLOAT", "FLOAT RANGE", "BOOLEAN"}  # click's type names


def _option_metavars(skip=("bench",)) -> dict[str, str]:
    """``command --option`` -> the metavar its --help shows, for every option that takes a value."""
    import click

    from resnet_deploy.cli.main import cli

    shown = {}
    for name, cmd in cli.commands.items():
        if name in skip:  # bench's help belongs to the bench work
            continue
        ctx = click.Context(cmd, info_name=name, parent=click.Context(cli))
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and not p.count and not p.hidden:
                shown[f"{name} {p.opts[-1]}"] = p.make_metavar(ctx)
    return shown


def test_every_option_says_what_it_takes():
    """No TEXT / INTEGER in --help: each option's metavar names what it takes (POINTS, PCT, N,N, DIR ...)."""
    generic = {opt: m for opt, m in _option_metavars().items() if m.strip("[]") in GENERIC_METAVARS}
    assert generic == {}


def test_choice_metavars_list_every_choice():
    from resnet_deploy.preprocess import INTERPOLATIONS
    from resnet_deploy.types import CalibMethod, EngineMode, HardwareCompat, Precision

    def values(enum):
        return [m.value for m in enum]

    shown = _option_metavars()
    expected = {"export --calib-method": values(CalibMethod), "quantize --calib-method": values(CalibMethod),
                "export --engine": values(EngineMode), "export --hardware-compat": values(HardwareCompat),
                "build --hardware-compat": values(HardwareCompat), "triton --precision": values(Precision),
                "export --interpolation": list(INTERPOLATIONS), "fuse --target": ["portable", "onnxruntime", "tensorrt"],
                "triton --device": ["gpu", "cpu"]}
    assert {opt: shown[opt].strip("[]").split("|") for opt in expected} == expected
