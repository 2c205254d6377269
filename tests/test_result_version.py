"""A checkpoint is resumed only by code that computes the same numbers: every result key starts with
``RESULT_VERSION``, and the version is tied to the golden runs' recorded histories, so code whose results
change (the golden test fails, the histories are recorded again) cannot keep the old version."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))

import golden_runs as G  # noqa: E402

import t2l_core.checkpoint as checkpoint  # noqa: E402
from _edit_helpers import tiny_config  # noqa: E402
from t2l_core import api  # noqa: E402
from t2l_core.image.training import input_fingerprint  # noqa: E402
from t2l_core.nla.fit_checkpoint import fit_key  # noqa: E402
from t2l_core.video.training import nla_fingerprint  # noqa: E402

# RESULT_VERSION -> digest of the golden histories recorded with it (tests/golden/golden.json without the
# machine). Re-recording the golden runs changes the digest: raise RESULT_VERSION and add a row.
RECORDED_RESULTS = {
    "2": "5807952fbc889f6f",
}


def recorded_digest() -> str:
    recorded = json.loads((G.HERE / "golden.json").read_text())
    recorded.pop("machine")
    return hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:16]


def test_the_result_version_changes_with_the_recorded_results():
    digest = recorded_digest()
    assert RECORDED_RESULTS.get(checkpoint.RESULT_VERSION) == digest, (
        f"the golden histories (digest {digest}) were not recorded with RESULT_VERSION "
        f"{checkpoint.RESULT_VERSION}: the code's results changed, so raise RESULT_VERSION in t2l_core/checkpoint.py "
        "and add it with this digest to RECORDED_RESULTS")
    assert checkpoint.RESULT_VERSION == max(RECORDED_RESULTS, key=int)  # a version is never used twice
    assert len(set(RECORDED_RESULTS.values())) == len(RECORDED_RESULTS)


def test_every_result_key_holds_the_result_version(tiny_clip, monkeypatch):
    golden_atlas = api.load_nla(str(G.HERE / "atlas.safetensors"))
    video = G.video()
    video_config = api.video_edit_config(prompt="p", layer="bg", iters=2)

    def keys() -> list:
        return [input_fingerprint(G.image(), tiny_config(), clip=tiny_clip),
                nla_fingerprint(golden_atlas, video_config, tiny_clip),
                fit_key(video.frames, video.masks, api.nla_fit_config(iterations=3))]

    now = keys()
    monkeypatch.setattr(checkpoint, "RESULT_VERSION", str(int(checkpoint.RESULT_VERSION) + 1))
    assert all(a != b for a, b in zip(now, keys()))


def copy_of(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    shutil.copyfile(G.HERE / "previous_version" / name, path)
    return path


def stale(notes: list) -> bool:
    return any("was made by a run with other inputs or settings" in n for n in notes)


def test_an_atlas_fit_checkpoint_of_the_previous_result_version_is_not_resumed(tmp_path):
    history: list = []
    nla = G.nla_fit(history, checkpoint_path=str(copy_of("nla_checkpoint.safetensors", tmp_path)))
    assert stale(nla.notes) and len(history) == G.NLA_ITERATIONS  # every step run again, none resumed


def test_edit_checkpoints_of_the_previous_result_version_are_not_resumed(tiny_clip, tmp_path):
    image = G.image_edit(tiny_clip, True, checkpoint_path=copy_of("image_checkpoint.safetensors", tmp_path),
                         resume=True)
    assert image.resumed_from == 0 and stale(image.notes)
    golden_atlas = api.load_nla(str(G.HERE / "atlas.safetensors"))
    video = G.video_edit(tiny_clip, golden_atlas, True, resume=True,
                         checkpoint_path=copy_of("video_checkpoint.safetensors", tmp_path))
    assert video.resumed_from == 0 and stale(video.notes)
