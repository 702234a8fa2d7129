"""``dspex demo``: the README's main job (grows as the issues land)."""

from __future__ import annotations


def run_demo() -> int:
    """Run the demo and return the process exit code."""
    print("dspex demo: the runtime is not built yet")
    return 0
