"""Training on corrective episodes: the expert's action is the target where the expert labelled a step.

A selection may mix demonstrations and corrective episodes (``episode.kind = 'corrective'``: simulated,
``roboloop collect --corrective``, or hardware interventions recorded through ``roboloop.record``).
The rule, per control step of a corrective episode:

- the step is **expert-labelled** when the episode's expert labelled every step (a simulated corrective
  episode: ``episode.corrective_mode`` is ``dagger``, ``gated`` or ``expert``) or when the step's
  ``/control/source`` is 1 (the expert or a person was in control: an intervention, ``corrective_mode =
  'intervention'`` or unset);
- an expert-labelled step's target is ``/control/expert_action`` (where the episode logs it; else the
  executed ``/robot/joint_targets``, which is the person's action during a takeover); every other step's
  target is the executed ``/robot/joint_targets`` (the policy's own action);
- with ``TrainConfig.expert_steps_only`` the steps that are not expert-labelled are left out of the
  loss (their chunk entries are masked). Demonstrations are expert-labelled at every step.

The extra stream fields are added only when the selection holds a corrective episode, so a run on
demonstrations streams, normalizes and trains exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from roboloop import schema
from roboloop.stream import Field

__all__ = ["EXPERT_FIELD", "SOURCE_FIELD", "control_fields", "expert_targets", "segment_labelling"]

EXPERT_FIELD = "control_expert_action"
"""Stream field of `/control/expert_action` (a window like the action's)."""
SOURCE_FIELD = "control_source"
"""Stream field of `/control/source` (a window like the action's)."""

DEMONSTRATION, EVERY_STEP, TAKEOVER = 0, 1, 2
"""How a segment's steps are labelled: its own action (a demonstration), the expert at every step
(simulated corrective), the expert only where `/control/source` is 1 (an intervention)."""

_KIND = f"{schema.EPISODE}.{schema.EPISODE_KIND}"
_MODE = f"{schema.EPISODE}.{schema.EPISODE_CORRECTIVE_MODE}"


def segment_labelling(catalog, dataset: str, segment_ids: Sequence[str]) -> np.ndarray | None:
    """Per segment: DEMONSTRATION, EVERY_STEP or TAKEOVER (module docstring); None when none is corrective."""
    table = catalog.segment_table(dataset)
    if _KIND not in table.column_names or not segment_ids:
        return None
    kinds = dict(zip(table.column("segment_id").to_pylist(), table.column(_KIND).to_pylist()))
    modes = dict(zip(table.column("segment_id").to_pylist(), table.column(_MODE).to_pylist())) \
        if _MODE in table.column_names else {}
    out = np.full(len(segment_ids), DEMONSTRATION, np.int64)
    for i, sid in enumerate(segment_ids):
        if kinds.get(sid) == schema.KIND_CORRECTIVE:
            out[i] = EVERY_STEP if modes.get(sid) in schema.CORRECTIVE_MODES else TAKEOVER
    return out if (out != DEMONSTRATION).any() else None


def control_fields(chunk: int, width: int) -> dict[str, Field]:
    """The stream fields the rule reads, windowed like the action chunk; zeros (mask False) where a segment lacks them."""
    window = tuple(range(chunk))
    return {EXPERT_FIELD: Field(schema.CONTROL_EXPERT_ACTION, window=window, fill=width),
            SOURCE_FIELD: Field(schema.CONTROL_SOURCE, window=window, fill=1)}


def expert_targets(enc: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor], labelling: np.ndarray,
                   expert_steps_only: bool) -> dict[str, torch.Tensor]:
    """`enc` (an encoded batch) with the module's rule applied to `action` (and, with `expert_steps_only`, `action_mask`)."""
    how = torch.as_tensor(labelling)[batch["episode_index"].to(torch.int64)][:, None]  # [B, 1]
    source = batch[SOURCE_FIELD].to(torch.float32)[..., 0]  # [B, K]
    labelled = (how != TAKEOVER) | ((how == TAKEOVER) & (source >= 0.5) & batch[f"{SOURCE_FIELD}_mask"].to(torch.bool))
    use_expert = labelled & (how != DEMONSTRATION) & batch[f"{EXPERT_FIELD}_mask"].to(torch.bool)
    enc["action"] = torch.where(use_expert[..., None], batch[EXPERT_FIELD].to(torch.float32), enc["action"])
    if expert_steps_only:
        enc["action_mask"] = enc["action_mask"] & labelled
    return enc
