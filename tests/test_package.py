"""What a user installs: one import name, the public API, package data, torch-free simulator and hardware models,
and no bare imports of the project's folders (kernel parameters: test_kernel_bundles)."""
import ast
import json
import os
import pathlib
import subprocess
import sys
from importlib import resources

import pytest

import spikeforge
import spikeforge.converter
import spikeforge.hwmodels
import spikeforge.interop
import spikeforge.simulator
from spikeforge.hwmodels import TargetError, available, load_target

FOLDERS = ("simulator", "converter", "hwmodels", "interop", "benchmarks")
REPO = pathlib.Path(__file__).resolve().parent.parent


def test_every_public_name_resolves_and_dir_lists_it():
    for name in spikeforge.__all__:
        assert getattr(spikeforge, name) is not None, name
    assert set(spikeforge.__all__) <= set(dir(spikeforge))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spikeforge.nope  # noqa: B018


def test_every_package_declares_all():
    for pkg in (spikeforge, spikeforge.converter, spikeforge.simulator, spikeforge.hwmodels, spikeforge.interop):
        assert pkg.__all__, pkg.__name__


def test_builtin_targets_ship_as_package_data_and_user_files_still_load(tmp_path):
    files = resources.files("spikeforge.hwmodels").joinpath("targets")
    assert sorted(p.name for p in files.iterdir() if p.name.endswith(".json")) == \
        ["generic45nm.json", "loihi.json", "loihi2.json", "speck.json", "truenorth.json", "xylo.json"]
    assert available() == ["generic45nm", "loihi", "loihi2", "speck", "truenorth", "xylo"]
    raw = json.loads(files.joinpath("loihi.json").read_text())
    raw["name"] = "my-loihi"
    raw["energy_pj"]["synops"]["value"] = 1.0
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(raw))
    t = load_target(str(mine))
    assert (t.name, t.energy_per_event("synops"), t.path) == ("my-loihi", 1.0, str(mine))
    assert load_target("loihi").energy_per_event("synops") != 1.0
    with pytest.raises(TargetError, match="unknown target 'targets/loihi'"):
        load_target("targets/loihi")  # a built-in name is a name, not a path into the package


def test_simulator_and_hwmodels_run_without_torch():
    """A subprocess in which importing torch fails: read nothing from the converter, run and price a network."""
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
import spikeforge
from spikeforge import hwmodels, simulator
from spikeforge.simulator import Network, Population, Projection
pops = [Population.make("in", "input", (2,)), Population.make("h", "if", (2,), threshold=1.0),
        Population.make("out", "readout", (2,))]
projs = [Projection("w1", "dense", "in", "h", np.eye(2, dtype=np.float32)),
         Projection("w2", "dense", "h", "out", np.eye(2, dtype=np.float32))]
from spikeforge.simulator.network import CoreEdges, CoreTable
ids = np.arange(3)
cores = CoreTable(ids, np.zeros(3, np.int64), ids, np.zeros(3, np.int64), ids.copy(), np.zeros(3, np.int64),
                  np.full(3, 2))
edges = CoreEdges(np.array([0, 1]), np.array([1, 2]), np.array([2, 2]), np.array([2, 2]))
net = Network(pops, projs, cores, edges, {"name": "tiny"})
res = simulator.run(net, np.array([[1.0, 0.5]]), 4)
cost = hwmodels.estimate(res.counters, simulator.COUNTERS, 1, hwmodels.load_target("loihi"), ["in", "h", "out"])
assert res.total("spikes") == 6, res.totals()
assert cost.energy_pj > 0
assert "torch" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _python_files():
    roots = [pathlib.Path(p) for p in spikeforge.__path__]
    for pkg in (spikeforge.converter, spikeforge.simulator, spikeforge.hwmodels, spikeforge.interop):
        roots += [pathlib.Path(p) for p in pkg.__path__]
    roots.append(pathlib.Path(__file__).parent)
    if (REPO / "benchmarks").is_dir():
        roots.append(REPO / "benchmarks")
    for root in roots:
        yield from root.glob("*.py")


def test_no_module_imports_a_bare_project_folder():
    bad = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FOLDERS:
                    bad.append(f"{path}:{node.lineno} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_wheel_installs_one_import_name():
    """setup.cfg maps each folder under `spikeforge` and ships the targets (the CI builds the wheel itself)."""
    if not (REPO / "setup.cfg").is_file():
        pytest.skip("not run from a source tree")
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    packages = [p.strip() for p in cfg["options"]["packages"].split(",")]
    assert all(p == "spikeforge" or p.startswith("spikeforge.") for p in packages)
    mapped = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    assert {v for k, v in mapped.items() if k != "spikeforge"} == {"converter", "simulator", "hwmodels", "interop"}
    assert "targets/*.json" in cfg["options.package_data"]["spikeforge.hwmodels"]
    assert os.path.isdir(REPO / "hwmodels" / "targets")


def test_every_test_extra_imports():
    """Each package the test extras install imports in this environment (torchvision 0.28.0, once pinned there for
    Norse, did not import with torch 2.13.0+cpu: "operator torchvision::nms does not exist")."""
    import importlib
    import importlib.metadata as md
    import re

    modules = {"pytest": "pytest", "ruff": "ruff", "hypothesis": "hypothesis", "sanafe": "sanafe",
               "snntorch": "snntorch", "nirtorch": "nirtorch"}
    extras = [r for r in md.requires("spikeforge") or [] if re.search(r"extra\s*==\s*['\"]test['\"]", r)]
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in extras]
    assert names and set(names) <= set(modules), names  # a new extra needs its import name here
    for name in names:
        importlib.import_module(modules[name])
