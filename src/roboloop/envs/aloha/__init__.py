"""The ALOHA bimanual TransferCube task in MuJoCo
(via gym-aloha), scene conditions, the scripted handover demonstrator and the strict
success metric.

* :class:`SceneConditions` (``conditions.py``): region / yaw / lighting / table / distractors.
* :class:`AlohaSim` (``env.py``): seeded, condition-aware simulator; physics only or
  with the cameras you list. It is a :class:`BimanualSim`, the base every ALOHA bimanual
  simulator here shares (the insertion task's too).
* :class:`ScriptedHandover` (``demonstrator.py``): ``policy_id = "scripted-handover-v1"``.
* :class:`SuccessTracker` (``success.py``): the strict handover success definition.

Importing this package is cheap: MuJoCo / dm_control / gym-aloha load on first use
of :class:`AlohaSim` (with ``MUJOCO_GL=egl`` unless already set).
"""

from .conditions import SceneConditions
from .demonstrator import ScriptedHandover
from .env import AlohaSim, BimanualSim
from .success import SuccessResult, SuccessTracker

__all__ = ["SceneConditions", "AlohaSim", "BimanualSim", "ScriptedHandover", "SuccessTracker", "SuccessResult"]
