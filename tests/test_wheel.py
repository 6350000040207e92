"""`pip install` of a built wheel works from any folder: the configs ship inside the package.

The wheel goes into a fresh venv whose other packages come from the test's own environment (a .pth
line: the editable install there is not activated by it, so `cl_adapters` is the wheel's)."""

import json
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import ROOT


def test_a_built_wheel_runs_from_any_folder(tmp_path):
    src, dist, venv, work = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    for name in ("pyproject.toml", "README.md"):  # a copy: the build writes build/ and *.egg-info beside it
        src.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src)
    for package in ("cl_adapters", "hydra_plugins"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("cl_adapters-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    configs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cl_adapters" / "conf").rglob("*.yaml")}
    assert configs - shipped == set()  # nested groups too (experiment/split_mnist_tuned/)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    Path(venv_site, "deps-from-test-env.pth").write_text("\n".join(ours) + "\n")
    work.mkdir()
    where = subprocess.run([python, "-c", "import cl_adapters; print(cl_adapters.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the wheel's package, not the repo's

    done = subprocess.run([bin_dir / "cl-adapters", "strategy.epochs=1", "logger=console", "hydra.run.dir=run"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((work / "run" / "results.json").read_text())["run"]["status"] == "complete"
    report = subprocess.run([bin_dir / "cl-adapters-report", "run"], cwd=work, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and "| split_digits | adapter | 0 |" in report.stdout, report.stderr[-2000:]
