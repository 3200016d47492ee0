"""Benchmarks of the gateway against baselines measured in the same run.

`python -m bench` runs them; see bench/README.md for the method.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the servers are started from here."""
