"""Settings stated once: nested config dataclasses, one flat public name per setting, and the CLI options and
node widgets that take their defaults from them."""

from __future__ import annotations

import dataclasses

import pytest

from t2l_core.cli.main import build_parser
from t2l_core.cli.setting_options import config_from_args
from t2l_core.edit.config import RUNTIME_FIELDS, EditConfig, OptimConfig
from t2l_core.edit.generator import GeneratorConfig
from t2l_core.nla.fit import NLAFitConfig
from t2l_core.nla.losses import NLALossWeights
from t2l_core.settings import choices_of, default_of, help_of, limits_of
from t2l_core.video.config import VideoEditConfig

# the flat dict that layer files and checkpoints store (their fingerprints hash it): a file format
IMAGE_FLAT_NAMES = [
    "prompt", "screen_prompt", "source_prompt", "roi_text", "iters", "seed", "lr", "momentum", "weight_decay",
    "lr_decay", "lr_min", "size", "full_image_every", "jitter_p", "flip_p", "scale_min", "scale_max", "crop_min",
    "n_views", "view_short_side", "view_max_long", "structure_max_long", "view_min_crop", "view_fill",
    "lambda_composition", "lambda_screen", "lambda_structure", "sparsity_l1", "sparsity_l0", "lambda_bootstrap",
    "bootstrap_schedule", "bootstrap_steps", "bootstrap_min", "relevancy_layers", "relevancy_on",
    "authors_bootstrap_bug", "generator", "fast", "autocast", "threads", "compile", "save_memory",
    "exclude_text", "lambda_protect"]
VIDEO_FLAT_NAMES = IMAGE_FLAT_NAMES + [
    "layer", "frame_offset", "mask_threshold", "mask_border", "bg_full_downscale", "atlas_scale",
    "multiply_foreground_alpha", "direct_pass", "authors_fg_inputs"]


def test_the_flat_dict_keeps_its_names_and_order():
    assert list(EditConfig().to_dict()) == IMAGE_FLAT_NAMES
    assert list(VideoEditConfig().to_dict()) == VIDEO_FLAT_NAMES
    assert RUNTIME_FIELDS == ("fast", "autocast", "threads", "compile", "save_memory")
    assert EditConfig().to_dict()["generator"] == dataclasses.asdict(GeneratorConfig())


@pytest.mark.parametrize("cls", [EditConfig, VideoEditConfig])
def test_flat_names_reach_their_sub_config_and_come_back(cls):
    values = {"lr": 1e-3, "n_views": 3, "lambda_structure": 0.5, "bootstrap_schedule": "exponential",
              "view_fill": 0.25, "crop_min": 0.7, "fast": False, "generator": {"channels_down": 16}}
    c = cls.from_flat(values, prompt="x")
    assert (c.optim.lr, c.views.n_views, c.weights.structure, c.bootstrap.schedule, c.views.fill,
            c.dataset.crop_min, c.runtime.fast, c.generator.channels_down) == \
        (1e-3, 3, 0.5, "exponential", 0.25, 0.7, False, 16)
    flat = c.to_flat()
    assert {k: flat[k] for k in values if k != "generator"} == {k: v for k, v in values.items() if k != "generator"}
    assert cls.from_dict(c.to_dict()) == c and cls.from_flat(flat) == c
    # every other setting keeps the class's default
    untouched = cls().to_flat()
    assert all(flat[k] == untouched[k] for k in flat if k not in values and k != "prompt")


def test_unknown_names_are_refused_by_from_flat_and_skipped_in_stored_dicts():
    with pytest.raises(ValueError, match="n_view"):
        EditConfig.from_flat(prompt="x", n_view=3)
    stored = {**EditConfig(prompt="x").to_dict(), "setting_of_a_later_version": 1}
    assert EditConfig.from_dict(stored) == EditConfig(prompt="x")


def test_the_video_defaults_are_stated_over_the_image_ones():
    image, video = EditConfig().to_flat(), VideoEditConfig().to_flat()
    differ = {k for k in image if image[k] != video[k]}
    assert differ == {"iters", "lr_decay", "crop_min", "n_views", "view_fill", "lambda_structure", "sparsity_l1",
                      "sparsity_l0", "bootstrap_schedule"}
    for name in differ:
        assert default_of(VideoEditConfig, name) == video[name] and default_of(EditConfig, name) == image[name]


def test_flat_names_set_and_read_their_sub_config_fields():
    c = VideoEditConfig.from_flat(prompt="x", lr=0.1, atlas_scale=2.0)
    assert (c.optim.lr, c.atlas.atlas_scale, c.views.n_views) == (0.1, 2.0, 6)
    assert not hasattr(c, "lr")  # one name per setting in code: the sub-config field
    c.optim = OptimConfig(lr=0.2)
    assert c.to_flat()["lr"] == 0.2 and c.to_flat()["atlas_scale"] == 2.0


@pytest.mark.parametrize("cls", [EditConfig, VideoEditConfig])
def test_every_user_facing_setting_has_help(cls):
    for name in cls.FLAT:
        if name != "generator":
            assert help_of(cls, name).strip(), name
    assert limits_of(cls, "n_views") == (1, 64)


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_cli_defaults_are_the_config_defaults():
    image = config_from_args(EditConfig, _parse("image", "x.png", "--prompt", "p", "--out", "o"))
    assert image == EditConfig(prompt="p")
    video = config_from_args(VideoEditConfig, _parse("video", "a.safetensors", "--prompt", "p", "--layer", "bg",
                                                     "--out", "o"), layer="bg")
    assert video == VideoEditConfig(prompt="p", layer="bg")
    assert config_from_args(NLAFitConfig, _parse("nla", "frames/")) == NLAFitConfig()


def test_cli_options_set_their_settings():
    args = _parse("image", "x.png", "--prompt", "p", "--out", "o", "--views", "3", "--size", "200", "--no-fast",
                  "--autocast", "off", "--save-memory", "--src-prompt", "cake", "--roi-text", "cat")
    c = config_from_args(EditConfig, args)
    assert (c.views.n_views, c.dataset.size, c.runtime.fast, c.runtime.autocast, c.runtime.save_memory,
            c.source_prompt, c.roi_text) == (3, 200, False, "off", True, "cake", "cat")
    args = _parse("video", "a.safetensors", "--prompt", "p", "--layer", "fg", "--out", "o", "--lr-decay", "0.5",
                  "--full-atlas-every", "9", "--atlas-scale", "2")
    c = config_from_args(VideoEditConfig, args, layer="fg")
    assert (c.optim.lr_decay, c.dataset.full_image_every, c.atlas.atlas_scale) == (0.5, 9, 2.0)


def test_node_widgets_take_the_config_defaults(pack):
    inputs = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"].INPUT_TYPES()
    widgets = {**inputs["required"], **inputs["optional"]}
    for widget, flat in (("iterations", "iters"), ("size", "size"), ("seed", "seed"), ("views", "n_views"),
                         ("lambda_composition", "lambda_composition"), ("lambda_screen", "lambda_screen"),
                         ("lambda_structure", "lambda_structure"), ("sparsity_l1", "sparsity_l1"),
                         ("sparsity_l0", "sparsity_l0"), ("lambda_bootstrap", "lambda_bootstrap")):
        opts = widgets[widget][1]
        assert opts["default"] == default_of(EditConfig, flat), widget
        assert (opts["min"], opts["max"]) == limits_of(EditConfig, flat), widget
        assert opts["tooltip"].startswith(help_of(EditConfig, flat)), widget


# the fit's widgets and options: (widget, option and its aliases, NLAFitConfig setting)
FIT_SETTINGS = [("iterations", ("--iters", "--iterations"), "iterations"),
                ("atlas_resolution", ("--resolution",), "atlas_resolution"), ("seed", ("--seed",), "seed"),
                ("batch_pixels", ("--batch", "--batch-pixels"), "batch_pixels"), ("flow", ("--flow",), "flow"),
                (None, ("--target-psnr",), "target_psnr")]


def test_fit_widgets_and_options_take_the_fit_config_metadata(pack, capsys):
    fit = pack.NODE_CLASS_MAPPINGS["T2L_NLAFit"].INPUT_TYPES()
    fit = {**fit["required"], **fit["optional"]}
    with pytest.raises(SystemExit):
        _parse("nla", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    defaults = vars(_parse("nla", "frames/"))
    for widget, flags, flat in FIT_SETTINGS:
        default, text, choices = (f(NLAFitConfig, flat) for f in (default_of, help_of, choices_of))
        lo, hi = limits_of(NLAFitConfig, flat)
        assert text.strip(), flat
        if widget is not None:
            kind, opts = fit[widget]
            assert (opts["default"], opts.get("min"), opts.get("max"), opts["tooltip"]) == (default, lo, hi, text)
            if choices:
                assert kind == list(choices), widget
        assert defaults[flat] == default, flat
        metavar = "{" + ",".join(choices) + "}" if choices else flags[0].lstrip("-").upper().replace("-", "_")
        assert ", ".join(f"{flag} {metavar}" for flag in flags) + f" {text} (default {default})" in shown, flat


def test_fit_options_and_their_aliases_set_the_fit_config():
    given = ("--iters", "30", "--batch", "1024", "--flow", "lk", "--resolution", "64", "--seed", "3",
             "--target-psnr", "28")
    expected = NLAFitConfig(iterations=30, batch_pixels=1024, flow="lk", atlas_resolution=64, seed=3,
                            target_psnr=28.0)
    assert config_from_args(NLAFitConfig, _parse("nla", "frames/", *given)) == expected
    aliases = _parse("nla", "frames/", "--iterations", "30", "--batch-pixels", "1024")
    assert (aliases.iterations, aliases.batch_pixels) == (30, 1024)
    with pytest.raises(ValueError, match="motion_init"):
        NLAFitConfig(motion_init="spline").validate()


def test_the_fit_config_is_stored_as_its_flat_settings():
    from t2l_core.nla.fit import MOTION_INITS

    c = NLAFitConfig(iterations=30, weights=NLALossWeights(residual_bg=0.5))
    assert c.to_dict() == dataclasses.asdict(c)  # the fit_config of saved atlases: field order, weights nested
    assert list(c.to_dict()) == [f.name for f in dataclasses.fields(NLAFitConfig)]
    assert NLAFitConfig.from_dict(c.to_dict()) == c
    assert NLAFitConfig.from_dict({"weights": {"residual_bg": 0.0}}).weights == NLALossWeights(residual_bg=0.0)
    with pytest.raises(ValueError, match="iteration"):
        NLAFitConfig.from_dict({"iteration": 3})
    assert set(MOTION_INITS) == set(choices_of(NLAFitConfig, "motion_init"))


def test_the_atlas_dataset_reads_the_video_edits_own_sub_configs():
    c = VideoEditConfig.from_flat(prompt="x", layer="background", frame_offset=4, atlas_scale=2.0, crop_min=0.5,
                                  full_image_every=9)
    sampling = c.atlas_sampling()
    assert sampling.sampling is c.atlas and sampling.crops is c.dataset and sampling.layer == "bg"
    assert (sampling.sampling.frame_offset, sampling.sampling.atlas_scale, sampling.crops.crop_min,
            sampling.crops.full_image_every) == (4, 2.0, 0.5, 9)
    for bad in ({"frame_offset": -1}, {"bg_full_downscale": 0.5}, {"atlas_scale": 0.0}, {"crop_min": 0.0},
                {"mask_threshold": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            VideoEditConfig.from_flat(prompt="x", **bad).validate()
