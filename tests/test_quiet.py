"""Lines from C++ libraries dropped on descriptor 2, in this process and the ones it starts."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = r"""
import os, subprocess, sys
from mlaas4hep_dask._quiet import TENSORFLOW_NOTES, drop_lines

child = (
    "import os; os.write(2, b'I0000 00:00:1796299178.753684    2863 port.cc:153] oneDNN custom operations are on.\\n'"
    " b'W0000 00:00:1796299178.753684    2863 child.cc:1] a warning of the child\\n')"
)
with drop_lines(TENSORFLOW_NOTES):
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796299066.244760    2485 cpu_feature_guard.cc:227] This TensorFlow binary\n")
    os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n")
    print("ours, through Python", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", child], check=True)
    os.write(2, b"E0000 00:00:1796299066.244760    2485 x.cc:1] an error\n")
print("after the block", file=sys.stderr, flush=True)
"""


def test_tensorflow_start_up_notes_are_dropped_and_everything_else_kept_in_order() -> None:
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "ours, through Python",
        "W0000 00:00:1796299178.753684    2863 child.cc:1] a warning of the child",
        "E0000 00:00:1796299066.244760    2485 x.cc:1] an error",
        "after the block",
    ]
