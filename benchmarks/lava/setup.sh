#!/usr/bin/env bash
# A Python 3.10 virtual environment with Lava 0.10 and lava-dl 0.6 (neither installs on Python 3.11), for
# benchmarks/netx_lava_check.py. lava-dl is installed without its dependencies (its PyTorch is only needed by
# slayer; netx_notorch.py stands in for the two imports netx makes of it).
#   bash benchmarks/lava/setup.sh VENV [PYTHON3.10]
set -euo pipefail
venv=${1:?usage: setup.sh VENV [PYTHON3.10]}
python=${2:-python3.10}
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q lava-nc==0.10.0 h5py
"$venv/bin/python" -m pip install -q --no-deps lava-dl==0.6.0
