"""Recording episodes. The public API a team's own robot loop records through is `episode` (`api`):

    from roboloop import record

    with record.episode("./.roboloop", "arm5", kind="demo") as ep:
        ep.log_scalars("/robot/joint_positions", t, q, names=JOINTS)
        ep.log_video_frame("/cameras/wrist", t, rgb)

Internals: writing one episode to a new RRD atomically with provenance (`episode`'s module,
`roboloop.record.episode`: `EpisodeRecorder`, `provenance`, layer writers) and seed
reservation (`seeds`). Every recording roboloop makes (demonstrations, rollouts, layers,
runs) goes through them.
"""

from roboloop.record.api import KINDS, ON_ERROR, Episode, RecordError, RecordWarning, blueprint_for, episode

# `episode` is the public function; the module of the same name stays importable as
# `from roboloop.record.episode import EpisodeRecorder` (the import system finds it in sys.modules).
__all__ = ["Episode", "KINDS", "ON_ERROR", "RecordError", "RecordWarning", "blueprint_for", "episode"]
