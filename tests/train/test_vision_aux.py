"""The vision policy's training-only auxiliary loss (`VisionConfig.aux_cube`): what it adds to the loss, what it
trains, and that deploy never reads the cube pose; off by default, the policy is the one it was."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from roboloop import schema
from roboloop.collect.run import Observation
from roboloop.train import TrainConfig, VisionConfig, load_policy, train
from roboloop.train.features import AUX, ObservationEncoder
from roboloop.train.policies import CUBE_AUX, make_policy
from roboloop.train.protocol import feature_specs
from tests.train.test_train import K, make_dataset, small_cfg

SMALL = {"image_width": 32, "image_height": 24, "channels": (8, 8), "keypoints": 4, "hidden": 32, "layers": 1}


def _policy(aux: float, **kw):
    cfg = TrainConfig(dataset="syn", selection="sel", policy="vision", chunk=K, model=VisionConfig(**SMALL, aux_cube=aux, **kw))
    specs = feature_specs(cfg)
    torch.manual_seed(0)
    pol = make_policy(cfg, specs)
    rng = np.random.default_rng(0)
    pol.normalizer.load_stats({k: {"mean": rng.normal(size=d).astype(np.float32), "std": rng.uniform(0.5, 2, d).astype(np.float32)}
                               for k, d in pol.normalizer.shapes.items()})
    return cfg, specs, pol


def _batch(b: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(b, 3, 24, 32, generator=g), "joints": torch.randn(b, 14, generator=g),
            "phase": torch.rand(b, 1, generator=g), "action": torch.randn(b, K, 14, generator=g),
            "action_mask": torch.ones(b, K, dtype=torch.bool), CUBE_AUX: torch.randn(b, 7, generator=g)}


def test_aux_off_by_default_leaves_the_policy_as_it_was():
    cfg, specs, pol = _policy(0.0)
    assert VisionConfig().aux_cube == 0.0
    assert [s.name for s in specs] == ["image", "joints", "phase", "action"]
    assert pol.aux_head is None and not any(k.startswith("aux_head") for k in pol.state_dict())
    assert "cube_aux" not in cfg.to_json()  # no cube pose is streamed
    # the recipe digest is the one vision runs had before the option existed (their config without `aux_cube`)
    d = cfg.to_dict()
    for k in ("dataset", "selection", "nproc", "state", "action", "tasks", "expert_steps_only"):
        d.pop(k)
    d["model"].pop("aux_cube")
    d["model"].pop("brightness")  # likewise off (tests/train/test_vision_augment.py)
    assert cfg.digest() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
    assert cfg.replace(model=VisionConfig(**SMALL, aux_cube=1.0)).digest() != cfg.digest()


def test_aux_loss_adds_the_weighted_cube_position_error_and_trains_only_the_encoder():
    _, specs, pol = _policy(0.5, joint_noise=0.0, shift_px=0)
    assert [(s.name, s.kind, s.path) for s in specs if s.kind == AUX] == [(CUBE_AUX, AUX, schema.CUBE_POSE)]
    batch = _batch()
    pol.eval()
    chunk_only, _ = pol.loss(batch)
    pol.train()
    total, m = pol.loss(batch)
    # independently: the aux head on the keypoints of the normalized image vs the normalized cube x, y, z
    with torch.no_grad():
        kp = pol.keypoints(pol.backbone((batch["image"] - 0.5) / 0.25))
        target = (batch[CUBE_AUX][:, :3] - pol.normalizer.cube_aux_mean[:3]) / pol.normalizer.cube_aux_std[:3]
        aux = (pol.aux_head(kp) - target).abs().mean()
    assert abs(m["aux_l1"] - float(aux)) < 1e-6
    assert abs(float(total.detach()) - float(chunk_only.detach()) - 0.5 * float(aux)) < 1e-5
    # gradients: the aux term reaches the encoder, not the action head (same weights, with and without it)
    _, _, plain = _policy(0.0, joint_noise=0.0, shift_px=0)
    plain.load_state_dict({k: v for k, v in pol.state_dict().items() if not k.startswith("aux_head")})
    plain.normalizer.load_arrays({k: v for k, v in pol.normalizer.to_arrays().items() if not k.startswith(CUBE_AUX)})
    plain.train()
    total.backward()
    plain.loss(batch)[0].backward()
    assert torch.allclose(pol.head[0].weight.grad, plain.head[0].weight.grad, atol=1e-6)
    assert not torch.allclose(pol.backbone[0].weight.grad, plain.backbone[0].weight.grad, atol=1e-6)


def test_aux_run_deploys_without_the_cube_pose(catalog):
    make_dataset(catalog, n=3, video=(32, 24), holdout=0.3)
    cfg = small_cfg(policy="vision", epochs=1, batch_size=64, samples=0, holdout_every=1, checkpoint_every=1,
                    model=VisionConfig(**SMALL, aux_cube=1.0))
    res = train(catalog, cfg)
    assert res.status == "finished"
    assert load_policy(catalog, res.run_id).policy_id == res.run_id
    pol = load_policy(catalog, res.run_id)
    img = np.full((24, 32, 3), 90, np.uint8)
    actions = []
    for cube in (None, np.full(7, np.nan)):  # no cube pose at all, or garbage: the same action
        pol.reset()
        actions.append(pol.action(0, Observation(0, 0.0, np.zeros(14), cube, {"top": img})))
    assert np.all(np.isfinite(actions[0])) and np.array_equal(actions[0], actions[1])
    enc = ObservationEncoder(feature_specs(cfg), cfg)
    assert CUBE_AUX not in enc.encode(Observation(0, 0.0, np.zeros(14), None, {"top": img}))
