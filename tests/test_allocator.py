"""The CLI's malloc tuning applies where it should (glibc) and is a no-op elsewhere."""

import platform
import subprocess
import sys

import pytest

# Forward + backward of a width-128 network on 8192 points: the 4 MB activations that glibc
# otherwise hands back to the OS and faults in again on every step.
CHILD = """
import resource, sys, torch
from occnet_backend import OccupancyNetwork
from occnet_backend.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
torch.manual_seed(0)
model, points = OccupancyNetwork(), torch.rand(8192, 3) - 0.5
def step():
    model(points).square().mean().backward()
for _ in range(3):
    step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) // 5)
"""


def faults_per_step(mode: str) -> int:
    # in a child process: the tuning is process-wide and one-way
    run = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[-1])


def test_keep_freed_memory_applies_on_glibc_and_cuts_page_faults_per_step():
    from occnet_backend.allocator import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    if not glibc:
        assert keep_freed_memory() is False
        return
    # the fewest of three runs each: other work on the machine only ever adds faults
    default = min(faults_per_step("default") for _ in range(3))
    tuned = min(faults_per_step("tuned") for _ in range(3))
    if default < 1000:  # glibc's adaptive thresholds sometimes keep the memory by themselves
        pytest.skip(f"nothing to fix here: {default} page faults per step without the tuning")
    # measured here: 6,100-6,800 faults per step by default, 600-1,200 tuned; when glibc's adaptive
    # thresholds already kept part of the memory (default 1,420 once, on a fresh CI-like clone) the
    # tuned run is at its usual level but not a third of the default: either shows the tuning works.
    # One run each once gave 4,684 vs 1,638 on a busy machine, hence the fewest of three.
    assert tuned < default / 3 or (tuned < default and tuned <= 1200), \
        f"page faults per step: {default} default, {tuned} tuned"
