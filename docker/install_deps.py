"""Install the core dependencies of focus-nemo that a GPU base image lacks, leaving the image's stack alone.

Usage (in the Dockerfile, before the package itself is installed with ``pip install --no-deps``)::

    python docker/install_deps.py pyproject.toml --constraints docker/constraints.txt
    python docker/install_deps.py pyproject.toml --dry-run      # report only

Every requirement in ``[project].dependencies`` is sorted into one of four cases:

* provided by the image (torch): never installed, the image's CUDA build is the one to use;
* installed at a version inside the range: kept;
* installed at a version outside the range: kept and reported, because the image's NeMo / Megatron
  stack was built and tested against it (e.g. a different numpy);
* missing: installed with pip at the version pinned in the constraints file (what CI tests with).

Afterwards Megatron Core and NeMo are checked against STACK_MINIMUM. The exit status is non-zero if
pip fails, an installed requirement is still missing, or the stack is too old.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# Distributions the base image provides and pip must never replace.
IMAGE_PROVIDED = {"torch"}

# Oldest versions of the image's stack accepted: Megatron Core 0.14 has the per-layer `tp_group` of
# ColumnParallelLinear / RowParallelLinear that NemoFocusProjections passes (0.12 has not); NeMo 2.6
# builds the Hyena model with `get_hyena_stack_spec`, the layout focus_nemo.nemo is written against
# (2.5 does not). BioNeMo 2.6.1 carries Megatron Core 0.12 / NeMo 2.3, BioNeMo 2.6.3 NeMo 2.5.
STACK_MINIMUM = {"megatron-core": "0.14.0rc0", "nemo-toolkit": "2.6.0rc0"}


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_requirements(pyproject: str) -> list[Requirement]:
    """The package's core requirements whose environment markers apply to this interpreter."""
    import tomllib  # Python >= 3.11 (the images are 3.12)

    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def plan(requirements: list[Requirement], installed: dict[str, str | None]) -> dict[str, list]:
    """Sort requirements by what to do with them.

    Args:
        requirements: the package's core requirements.
        installed: canonical distribution name -> installed version (None when missing).

    Returns:
        {"image": [...], "keep": [...], "mismatch": [(req, version)], "install": [...]}.
    """
    out: dict[str, list] = {"image": [], "keep": [], "mismatch": [], "install": []}
    for req in requirements:
        name = canonicalize_name(req.name)
        version = installed.get(name)
        if name in IMAGE_PROVIDED:
            out["image"].append(req)
        elif version is None:
            out["install"].append(req)
        elif req.specifier.contains(version, prereleases=True):
            out["keep"].append(req)
        else:
            out["mismatch"].append((req, version))
    return out


def stack_problems(installed: dict[str, str | None]) -> list[str]:
    """Messages for every NeMo-stack distribution that is missing or older than STACK_MINIMUM."""
    problems = []
    for name, minimum in STACK_MINIMUM.items():
        version = installed.get(name)
        if version is None:
            problems.append(f"{name} is not installed (focus_nemo.nemo needs >= {minimum})")
        elif Version(version) < Version(minimum):
            problems.append(f"{name} {version} is older than {minimum}, the oldest with the APIs focus_nemo.nemo uses")
    return problems


def _installed(names) -> dict[str, str | None]:
    return {canonicalize_name(n): installed_version(n) for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject", help="the package's pyproject.toml")
    parser.add_argument("--constraints", help="pip constraints file (exact versions for missing packages)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be installed; install nothing")
    args = parser.parse_args(argv)

    reqs = read_requirements(args.pyproject)
    names = [r.name for r in reqs] + list(STACK_MINIMUM)
    todo = plan(reqs, _installed(names))
    for req in todo["image"]:
        print(f"image provides {req.name} {installed_version(req.name)} (package asks {req})")
    for req in todo["keep"]:
        print(f"ok       {req.name} {installed_version(req.name)}")
    for req, version in todo["mismatch"]:
        print(f"KEEPING  {req.name} {version} from the image although the package asks {req}")
    for req in todo["install"]:
        print(f"install  {req}")
    if todo["install"] and not args.dry_run:
        cmd = [sys.executable, "-m", "pip", "install", "--no-cache-dir"]
        if args.constraints:
            cmd += ["--constraint", args.constraints]
        subprocess.run(cmd + [str(r) for r in todo["install"]], check=True)

    status = 0
    after = _installed(names)
    if not args.dry_run:
        still = [r.name for r in todo["install"] if after[canonicalize_name(r.name)] is None]
        if still:
            print(f"error: still missing after pip install: {still}", file=sys.stderr)
            status = 1
    for problem in stack_problems(after):
        print(f"error: {problem}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
