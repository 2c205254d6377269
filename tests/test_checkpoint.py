"""One checkpoint file for every resumable job: atomic writes, the key rule, the job tag, optimizer state."""

from __future__ import annotations

import madgrad
import pytest
import torch

from t2l_core.checkpoint import (ATLAS_FIT_JOB, EDIT_JOB, FORMAT, CheckpointFile, load_optimizer_state,
                                 optimizer_state_tensors)


def _trained(opt_cls, steps: int, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = opt_cls([{"params": model[0].parameters(), "lr": 1e-2}, {"params": model[1].parameters(), "lr": 5e-3}],
                  **kw)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model, opt, x


@pytest.mark.parametrize("opt_cls,kw", [(torch.optim.Adam, {}), (madgrad.MADGRAD, {"momentum": 0.9})],
                         ids=["adam", "madgrad"])
def test_optimizer_state_round_trip_continues_bit_for_bit(tmp_path, opt_cls, kw):
    model, opt, x = _trained(opt_cls, 3, **kw)
    file = CheckpointFile(tmp_path / "run.safetensors", EDIT_JOB, "k1")
    file.write({**{f"gen.{k}": v for k, v in model.state_dict().items()}, **optimizer_state_tensors(opt)}, 3)
    found = file.read([])
    assert found is not None and found.step == 3 and found.meta["format"] == FORMAT and found.meta["job"] == EDIT_JOB
    fresh, fresh_opt, _ = _trained(opt_cls, 0, **kw)
    fresh.load_state_dict({k[4:]: v for k, v in found.tensors.items() if k.startswith("gen.")})
    load_optimizer_state(fresh_opt, found.tensors)
    for m, o in ((model, opt), (fresh, fresh_opt)):  # one more step each: the same parameters exactly
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_run_is_not_used_and_says_so(tmp_path):
    path = tmp_path / "run.safetensors"
    CheckpointFile(path, ATLAS_FIT_JOB, "old-key").write({"x": torch.zeros(1)}, 5)
    notes: list[str] = []
    assert CheckpointFile(path, ATLAS_FIT_JOB, "new-key").read(notes) is None
    assert len(notes) == 1 and "not used" in notes[0] and str(path) in notes[0]
    assert CheckpointFile(path, ATLAS_FIT_JOB, "old-key").read([]).step == 5


def test_a_file_of_another_kind_is_an_error_that_names_it(tmp_path):
    path = tmp_path / "fit.safetensors"
    CheckpointFile(path, ATLAS_FIT_JOB, "k").write({"x": torch.zeros(1)}, 1)
    with pytest.raises(ValueError, match="fit.safetensors is not a Text2LIVE edit checkpoint; delete it or turn "
                                         "resume off"):
        CheckpointFile(path, EDIT_JOB, "k").read([])


def test_writes_are_atomic_and_finish_removes_or_keeps(tmp_path):
    path = tmp_path / "sub" / "run.safetensors"
    file = CheckpointFile(path, EDIT_JOB, "k")
    file.write({"x": torch.ones(2)}, 1)
    assert path.is_file() and not (tmp_path / "sub" / "run.safetensors.part").exists()
    assert file.finish(True, lambda: file.write({"x": torch.ones(2)}, 2)) == path and file.read([]).step == 2
    (tmp_path / "sub" / "run.safetensors.part").write_bytes(b"half")  # a write interrupted by a crash
    assert file.finish(False, lambda: None) is None
    assert not path.exists() and not (tmp_path / "sub" / "run.safetensors.part").exists()
    assert CheckpointFile(None, EDIT_JOB, "k").write({"x": torch.ones(1)}, 1) is None  # no checkpoint asked for
