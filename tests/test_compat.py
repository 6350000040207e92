import subprocess
import sys

from cl_adapters import compat

COMPAT = compat.__file__


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_torchvision_imports_after_the_shim():
    proc = _python("import cl_adapters, torch, torchvision, avalanche; print(torch.ops.torchvision.nms)")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shim_is_needed_here():
    """Without it, this CPU torch cannot import the registry's CUDA torchvision (else the shim is moot)."""
    proc = _python("import torchvision")
    if proc.returncode == 0:  # a machine whose torchvision ops load: the shim must then be a no-op
        assert compat.torchvision_ops_load()
    else:
        assert "torchvision::nms" in proc.stderr


def test_shim_does_nothing_where_compiled_ops_load():
    code = f"""
import importlib.util, torch
spec = importlib.util.spec_from_file_location("compat_only", {COMPAT!r})
c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
c.torchvision_ops_load = lambda: True
assert c.patch_torchvision() is False
assert not hasattr(torch.ops.torchvision, "nms")
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shim_applies_once():
    assert compat.patch_torchvision() is False  # already applied (or not needed) at package import
