#!/usr/bin/env python3
"""Exit 0 when every ``name==version`` pin of a requirements file is installed."""

from __future__ import annotations

import re
import sys
from importlib import metadata


def unmet(path: str) -> list[str]:
    """The pins of ``path`` that the running interpreter does not have."""
    missing = []
    with open(path) as requirements:
        lines = requirements.readlines()
    for line in lines:
        pin = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if not pin:
            continue
        name, _, version = pin.groups()
        try:
            if metadata.version(name) != version:
                missing.append(line.strip())
        except metadata.PackageNotFoundError:
            missing.append(line.strip())
    return missing


if __name__ == "__main__":
    sys.exit(1 if unmet(sys.argv[1]) else 0)
