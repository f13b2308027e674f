"""The thread policy: a number as given, "auto" the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from smilesformer.threads import busy_cores, choose_threads, set_threads, usable_cores


def test_a_number_is_taken_as_given_and_nonsense_is_refused():
    assert choose_threads(3) == 3 and choose_threads("2") == 2
    for bad in ("0", "-1", "many", 0):
        with pytest.raises(ValueError, match="'auto' or a whole number >= 1"):
            choose_threads(bad)


def test_auto_leaves_the_busy_cores_to_their_processes(monkeypatch):
    from smilesformer import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    for busy, expected in ((0.1, 8), (1.0, 7), (2.6, 5), (7.9, 1), (30.0, 1)):
        monkeypatch.setattr(threads, "busy_cores", lambda busy=busy: busy)
        assert choose_threads("auto") == expected
    assert 1 <= choose_threads(None) <= usable_cores()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_busy_cores_sees_a_process_that_spins():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores(window=0.5) >= 0.6
    finally:
        spinner.kill()


def test_set_threads_sets_torch(monkeypatch):
    monkeypatch.delenv("SMILESFORMER_DESCRIPTOR_WORKERS", raising=False)
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_auto_keeps_an_omp_num_threads_that_was_set(monkeypatch):
    """A user's or a launcher's OMP_NUM_THREADS (torchrun sets 1 per process) is a choice "auto" keeps."""
    from smilesformer import threads

    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads("auto") == 1
    assert choose_threads(3) == 3, "a number given to --threads still wins"
