"""The ALOHA bimanual insertion task (gym-aloha's ``AlohaInsertion-v0``: the right arm's peg into the
left arm's socket) in MuJoCo: scene conditions, simulator, scripted demonstrator, strict success,
what an episode records, and the task object.

* :class:`InsertionConditions` (``conditions.py``): peg region / socket region / yaw / lighting / table.
* :class:`InsertionSim` (``env.py``): seeded, condition-aware simulator; physics only or with cameras.
* :class:`ScriptedInsertion` (``demonstrator.py``): ``policy_id = "scripted-insertion-v1"``.
* :class:`InsertionTracker` (``success.py``): strict success, stages and failure kinds.
* :class:`InsertionEpisodeWriter` (``recording.py``) and :data:`INSERTION` (``task.py``), the task object.

Importing this package is cheap: MuJoCo loads on first use of :class:`InsertionSim`.
"""

from .conditions import InsertionConditions
from .demonstrator import ScriptedInsertion
from .env import InsertionSim
from .success import InsertionResult, InsertionTracker

__all__ = ["InsertionConditions", "InsertionSim", "ScriptedInsertion", "InsertionTracker", "InsertionResult"]
