"""Check a built wheel: its only top-level import name is `spikeforge`, and it ships the hardware targets.

    python .ci/check_wheel.py dist/spikeforge-*.whl
"""
import sys
import zipfile


def main(path):
    names = zipfile.ZipFile(path).namelist()
    tops = {n.split("/")[0] for n in names}
    code = {t for t in tops if not t.endswith(".dist-info")}
    problems = []
    if code != {"spikeforge"}:
        problems.append(f"top-level entries other than spikeforge/: {sorted(code - {'spikeforge'})}")
    for target in ("loihi", "truenorth", "generic45nm"):
        if f"spikeforge/hwmodels/targets/{target}.json" not in names:
            problems.append(f"target {target}.json is missing")
    for sub in ("converter", "simulator", "hwmodels", "interop"):
        if f"spikeforge/{sub}/__init__.py" not in names:
            problems.append(f"spikeforge.{sub} is missing")
    if any(n.startswith(("spikeforge/benchmarks", "spikeforge/tests")) for n in names):
        problems.append("benchmarks/ or tests/ are installed")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))
    print(f"{path}: {len(names)} files, one import name (spikeforge), targets included")


if __name__ == "__main__":
    main(sys.argv[1])
