"""The camera policy's brightness/contrast augmentation (`VisionConfig.brightness`): in range, seeded, per sample,
training only; off by default, the policy and its recipe digest are the ones they were."""

from __future__ import annotations

import math

import pytest
import torch

from roboloop.train import TrainConfig, VisionConfig
from roboloop.train.config import TrainError
from roboloop.train.policies import make_policy, random_brightness
from roboloop.train.protocol import feature_specs
from tests.train.test_train import K
from tests.train.test_vision_aux import SMALL, _batch


def _images(b: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, 24, 32, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.1


def test_brightness_stays_in_range_is_seeded_and_differs_across_samples():
    image = _images()
    out = random_brightness(image, 1.0, torch.Generator().manual_seed(7))
    again = random_brightness(image, 1.0, torch.Generator().manual_seed(7))
    other = random_brightness(image, 1.0, torch.Generator().manual_seed(8))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, again) and not torch.equal(out, other)
    # one gain per image: the brightness ratios differ from image to image, and stay within the drawn range
    ratio = out.mean(dim=(1, 2, 3)) / image.mean(dim=(1, 2, 3))
    assert len(set(ratio.round(decimals=3).tolist())) == len(image)
    # unclipped pixels: the mean scales by the gain alone (contrast turns about the mean), so ratio in [1/2, 2]
    assert float(ratio.min()) >= 0.5 - 0.05 and float(ratio.max()) <= 2.0 + 0.05
    assert float(ratio.max() / ratio.min()) > 1.5  # the range is used, not a constant


def test_brightness_by_hand_for_one_image():
    image = _images(1)
    g = torch.Generator().manual_seed(5)
    u = torch.rand((1, 2), generator=torch.Generator().manual_seed(5)) * 2 - 1
    gain, contrast = math.exp(float(u[0, 0]) * math.log(1.5)), math.exp(float(u[0, 1]) * math.log(1.5) / 2)
    lit = image * gain
    expect = ((lit - lit.mean()) * contrast + lit.mean()).clamp(0, 1)
    assert torch.allclose(random_brightness(image, 0.5, g), expect, atol=1e-6)


def _policy(**kw):
    cfg = TrainConfig(dataset="syn", selection="sel", policy="vision", chunk=K, model=VisionConfig(**SMALL, **kw))
    torch.manual_seed(0)
    return cfg, make_policy(cfg, feature_specs(cfg))


def test_training_inputs_get_it_only_when_on_and_the_default_recipe_is_unchanged():
    assert VisionConfig().brightness == 0.0
    batch = {k: v for k, v in _batch().items() if k in ("image", "joints", "phase")}
    _, off = _policy(joint_noise=0.0, shift_px=0)
    _, on = _policy(joint_noise=0.0, shift_px=0, brightness=1.0)
    seen_off = off._augment(batch, torch.Generator().manual_seed(2))["image"]
    seen_on = on._augment(batch, torch.Generator().manual_seed(2))["image"]
    assert torch.equal(seen_off, batch["image"]) and not torch.equal(seen_on, batch["image"])
    assert float(seen_on.min()) >= 0 and float(seen_on.max()) <= 1
    cfg, _ = _policy()
    assert cfg.digest() == _policy(brightness=0.0)[0].digest() != _policy(brightness=1.0)[0].digest()
    with pytest.raises(TrainError, match="brightness"):
        VisionConfig(brightness=-0.1)
