"""bench/gpu_check.py stays runnable: its CPU smoke mode produces a table with every section, a failing
section is recorded in its row while the others still run, and the per-section processes (the GPU mode)
hand their rows back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def _table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| section |")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def test_smoke_run_prints_a_table_with_every_section(tmp_path, capsys):
    text = gpu_check.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert "SMOKE RUN" in text and "NOT a measurement" in text
    assert (tmp_path / "gpu_check.md").read_text() == text
    assert text in capsys.readouterr().out  # the table goes to stdout too
    rows = _table_rows(text)
    assert {r[0] for r in rows} == set(gpu_check.SECTIONS)
    errors = [r for r in rows if r[-1].startswith("error")]
    assert not errors, errors
    cases = {(r[0], r[1]) for r in rows}
    assert ("image", "plain fp32") in cases and ("video", "bg, fast (default)") in cases
    # smoke mode runs every case (only the compile section is left to GPUs)
    # (half-precision weights may be refused by the CPU's kernels when PyTorch's ISA is limited below the CPU's)
    untimed = [r[:2] for r in rows if r[2] == "-" and r[0] != "compile"
               and "unsupported by this CPU's kernels" not in r[-1]]
    assert not untimed, untimed
    # the plain fp32 rows are the reference of the others: a speed-up and a projected run
    fast = next(r for r in rows if r[0] == "image" and r[1].startswith("fast (default"))
    assert fast[3].endswith("x") and fast[8].startswith("1000 steps:") and float(fast[4]) > 0
    bg = next(r for r in rows if r[:2] == ["video", "bg, fast (default)"])
    assert bg[3].endswith("x") and bg[8].startswith("3000 steps:")
    assert "collected" in next(r for r in rows if r[0] == "tests")[-1]


def test_a_failing_section_is_recorded_and_the_others_still_run(monkeypatch):
    def broken(plan, rec, deadline, out_dir):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(gpu_check.SECTION_FUNCS, "ceiling", broken)
    text = gpu_check.main(["--smoke", "--device", "cpu", "--sections", "ceiling,compile"])
    rows = _table_rows(text)
    assert ["ceiling", "(section)"] == rows[0][:2] and "RuntimeError: CUDA error" in rows[0][-1]
    assert rows[1][:2] == ["compile", "fast + torch.compile"]


def test_isolated_sections_hand_their_rows_back():
    text = gpu_check.main(["--smoke", "--device", "cpu", "--isolate", "yes", "--sections", "ceiling,compile"])
    rows = _table_rows(text)
    assert [r[0] for r in rows] == ["ceiling"] * 4 + ["compile"]
    assert all(r[2].endswith("GFLOP/s") for r in rows[:4])


def test_unknown_sections_and_devices_are_refused():
    with pytest.raises(SystemExit, match="--sections"):
        gpu_check.main(["--smoke", "--sections", "image,gpu"])
    with pytest.raises(SystemExit, match="--device gpu"):
        gpu_check.main(["--smoke", "--device", "gpu"])
