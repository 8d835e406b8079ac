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
    assert set(r["runs"]) == {"mlp", "conv"}
    for model, run in r["runs"].items():
        assert run["prediction_mismatches_frames"] == 0 and run["prediction_mismatches_events"] == 0, model
        assert run["engine_accuracy_frames"] == run["engine_accuracy_events"] == run["snntorch_accuracy"], model
        assert set(run["spike_mismatches"].values()) == {0}, (model, run["spike_mismatches"])
        assert all(n > 0 for n in run["spikes_snntorch"].values()), model  # every layer fires: not vacuous
        assert run["macs_per_inference"] == 0 and run["synops_per_inference"] > 0  # events in: synaptic ops only
        costs = run["energy_per_inference"]
        assert set(costs) == {"loihi", "truenorth", "generic45nm"}
        for target, cost in costs.items():
            assert "refused" not in cost, (model, target, cost)
            assert cost["energy_uj"] > 0, (model, target)
            # the conv net's 800-input readout is split into spiking relays on TrueNorth (256 axons per core),
            # which re-quantize (NIR node "5"): the same accuracy is expected only where nothing was split
            assert cost["split"] == (["5"] if (model, target) == ("conv", "truenorth") else []), cost
            if not cost["split"]:
                assert cost["accuracy"] == run["snntorch_accuracy"], (model, target)
