"""The README's Python example and the command lines it feeds run as written (what a new user copies first)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_and_commands():
    text = README.read_text(encoding="utf-8")
    python = re.search(r"## Python\n.*?```python\n(.*?)```\n", text, re.S).group(1)
    block = re.search(r"With the files the Python example below writes.*?\n\n((?:    spikeforge [^\n]*\n)+)", text,
                      re.S)
    return python, [line.split()[1:] for line in block.group(1).splitlines()]


def test_readme_python_example_and_its_commands_run_as_written(tmp_path):
    python, commands = _example_and_commands()
    assert [c[0] for c in commands] == ["convert", "report", "simulate"]
    (tmp_path / "example.py").write_text(python + "\nprint('ACCURACY', accuracy, 'ENERGY', cost.energy_pj)\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-P", "example.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    accuracy, energy = float(words[words.index("ACCURACY") + 1]), float(words[words.index("ENERGY") + 1])
    # run as a script the example says what it found (issue 37: it printed nothing)
    assert f"accuracy {accuracy:.3f}," in out.stdout and f"on Loihi: {energy / 1e6:.3f} µJ" in out.stdout
    assert accuracy > 0.8 and energy > 0  # the digits ResNet converted onto Loihi at T = 4
    for name in ("net.h5", "net-loihi.h5", "model.pt", "calib.npz", "test.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    for argv in commands:
        out = subprocess.run([sys.executable, "-P", "-m", "spikeforge", *argv], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env=env)
        assert out.returncode == 0, (argv, out.stderr[-3000:])
    assert "| loihi | 8 |" in (tmp_path / "report" / "report.md").read_text()
    with np.load(tmp_path / "run.npz") as run:
        assert run["output"].shape == (449, 10)
