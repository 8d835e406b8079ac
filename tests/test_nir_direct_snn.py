"""benchmarks/direct_snn.py on its tiny config: snnTorch training on DVS-style digit events, NIR export, import-nir
--convention snntorch, simulate from frames and from address events: the same predictions and spikes as snnTorch's
own evaluation, and an energy figure per target. Run as a script (tests do not import benchmarks/), so the
installed spikeforge is the one used."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "direct_snn.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="benchmarks/ is not beside tests/")
def test_direct_snn_pipeline_matches_snntorch_on_a_tiny_config(tmp_path):
    pytest.importorskip("snntorch")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "direct_snn.json").read_text())
    assert r["prediction_mismatches_frames"] == 0 and r["prediction_mismatches_events"] == 0
    assert r["engine_accuracy_frames"] == r["engine_accuracy_events"] == r["snntorch_accuracy"]
    assert r["spike_mismatches"] == {"2": 0, "4": 0}
    assert all(n > 0 for n in r["spikes_snntorch"].values())  # both layers fire: the comparison is not vacuous
    assert r["macs_per_inference"] == 0 and r["synops_per_inference"] > 0  # event input: synaptic operations only
    assert set(r["energy_per_inference"]) == {"loihi", "truenorth", "generic45nm"}
    for cost in r["energy_per_inference"].values():
        assert cost["energy_uj"] > 0 and cost["accuracy"] == r["snntorch_accuracy"]
