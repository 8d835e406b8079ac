"""spikeforge.interop: interchange with other neuromorphic tools.

`nir_export` / `nir_import`: NIR graphs (PyPI `nir`); `sanafe`: export to SANA-FE and run side by side (PyPI
`sanafe`). Submodules are imported on use, so their optional dependencies are needed only then.
"""
__all__ = ["nir_export", "nir_import", "sanafe"]
