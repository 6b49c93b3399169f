"""Robot environments for roboloop: the ALOHA bimanual TransferCube task in MuJoCo
(via gym-aloha), scene conditions, the scripted handover demonstrator and the strict
success metric.

Importing this package is cheap: MuJoCo / dm_control / gym-aloha load on first use
of :class:`AlohaSim` (with ``MUJOCO_GL=egl`` unless already set).
"""

from .conditions import SceneConditions
from .env import AlohaSim

__all__ = ["SceneConditions", "AlohaSim"]
