"""Print pylock.toml as a requirements file with hashes, for pip versions that can't read it.

pip reads PEP 751 lock files only from 25.1 on, and not yet to install; `make setup` uses
this where uv can't be had: `pip install --require-hashes -r <(python this.py pylock.toml)`.
Only the standard library, so it runs before anything is installed.
"""

import sys
import tomllib
from pathlib import Path


def requirements(lock: dict) -> list[str]:
    """One `name==version ; marker --hash=...` line per locked package."""
    lines = []
    for package in lock["packages"]:
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        hashes = " ".join(f"--hash=sha256:{file['hashes']['sha256']}" for file in files)
        marker = f" ; {package['marker']}" if "marker" in package else ""
        lines.append(f"{package['name']}=={package['version']}{marker} {hashes}")
    return lines


if __name__ == "__main__":
    lock_file = Path(sys.argv[1] if len(sys.argv) > 1 else "pylock.toml")
    print("\n".join(requirements(tomllib.loads(lock_file.read_text()))))  # noqa: T201
