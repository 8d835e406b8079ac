"""Import lava-dl netx without PyTorch.

lava.lib.dl.netx only needs torch for two import-time side effects:
  * netx/__init__.py imports netx.sequential_modules (torch helper wrappers);
  * netx/hdf5.py imports `neuron_params` from lava.lib.dl.slayer.neuron.rf,
    which drags in the whole (torch-based) slayer package.
If torch is importable we use the real modules. Otherwise we register tiny
stand-in modules in sys.modules (an rf.neuron_params that refuses RF neurons,
and an empty sequential_modules) before importing netx. Nothing used by the
HDF5 -> Lava process translation or by the fixed_pt CPU models is replaced.
"""
import sys
import types

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


def _rf_neuron_params(device_params, scale=1 << 6, p_scale=1 << 12):
    """Stand-in for slayer's resonate-and-fire parameter helper (torch-based slayer is not installed): netx calls it
    only for RF neurons, which these checks never build."""
    raise NotImplementedError("resonate-and-fire neurons need lava-dl's torch-based slayer")


def _install_stubs():
    import importlib.util
    import os
    import warnings
    # Lava's compiler scans the netx package dir for ProcessModels and tries
    # to exec every *.py there (sequential_modules.py fails without torch ->
    # caught by Lava and turned into a harmless warning): silence it.
    warnings.filterwarnings('ignore', message='Cannot import module')
    # lava.lib.dl is a namespace package: locating it executes nothing
    dl = list(importlib.import_module('lava.lib.dl').__path__)[0]

    def mod(name, pkg=False, **attrs):
        m = types.ModuleType(name)
        rel = name.split('.')[3:]  # path below lava/lib/dl
        path = os.path.join(dl, *rel)
        if pkg:
            m.__path__ = []
            m.__file__ = os.path.join(path, '__init__.py')
        else:
            m.__file__ = path + '.py'
        m.__dict__.update(attrs)
        m.__dict__['__torch_stub__'] = True
        sys.modules[name] = m
        return m
    slayer = mod('lava.lib.dl.slayer', pkg=True)
    neuron = mod('lava.lib.dl.slayer.neuron', pkg=True)
    rf = mod('lava.lib.dl.slayer.neuron.rf', neuron_params=_rf_neuron_params)
    slayer.neuron = neuron
    neuron.rf = rf
    mod('lava.lib.dl.netx.sequential_modules')


if not HAVE_TORCH:
    _install_stubs()

from lava.lib.dl import netx  # noqa: E402

__all__ = ["HAVE_TORCH", "netx"]

# as in lava-dl's tests: never use torch inside lava.proc.conv
from lava.proc.conv import utils as _conv_utils  # noqa: E402

_conv_utils.TORCH_IS_AVAILABLE = False
