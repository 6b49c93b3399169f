"""Training is bit-identical across refactors: a fixed tiny config gives the same checkpoint bytes.

The digests below were computed on the code before `train/` was restructured (issue 20) and
pin the exact numbers: seeds, the order RNGs are consumed in, batch order, the checkpoint's
contents. They depend on the floating-point library too, so they are checked only with the
torch version they were computed with (elsewhere the test skips: recompute them with the
previous commit of `train/` if you upgrade torch).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from roboloop.train import train
from roboloop.train.loop import MODEL_FILE, sha256_file
from tests.train.test_train import make_dataset, small_cfg

TORCH = "2.13.0+cpu"
GOLDEN = {
    "single": "141ce803d023f4d9f5284abaadfe76c263225ca2e51208ac55cbbcaf583ca5b3",
    "single_losses": "4df18385b314249ef993db9a82e752a5c17ddbcf8c2bc0d96df4efcc31621a47",
    "resumed": "141ce803d023f4d9f5284abaadfe76c263225ca2e51208ac55cbbcaf583ca5b3",
    "two_ranks": "88e6ad171fa62df1dd92bcd9f312f3781029a1eb50132f86845fd724a5e6885f:27aba81deaae98d886219aff68f322ed24fc3ca3325475b29a377bce5f90beb5",
}


class _Stop(KeyboardInterrupt):
    pass


def _losses_digest(res) -> str:
    return hashlib.sha256(repr((res.train_losses, res.holdout_losses)).encode()).hexdigest()


def _digests(catalog) -> dict[str, str]:
    make_dataset(catalog)
    cfg = small_cfg(epochs=4, checkpoint_every=2, holdout_every=2)
    one = train(catalog, cfg)
    out = {"single": one.checkpoint_sha256, "single_losses": _losses_digest(one)}

    def stop(p):
        if p.epoch == 2 and not p.epoch_end:
            raise _Stop()

    with pytest.raises(_Stop):
        train(catalog, cfg, on_progress=stop, run_id="run-golden")
    resumed = train(catalog, cfg, resume="run-golden")
    out["resumed"] = sha256_file(catalog.workspace.run_dir(resumed.run_id) / MODEL_FILE)
    two = train(catalog, small_cfg(epochs=2, checkpoint_every=1, nproc=2))
    out["two_ranks"] = two.checkpoint_sha256 + ":" + _losses_digest(two)
    return out


@pytest.mark.skipif(torch.__version__ != TORCH, reason=f"digests computed with torch {TORCH}")
def test_fixed_config_gives_the_same_checkpoint_bytes(catalog):
    assert _digests(catalog) == GOLDEN
