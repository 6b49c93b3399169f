"""LeRobot datasets in and out: `import_lerobot` (v3.0, and v2.1) and `export_lerobot` (v3.0).

LeRobot is a peer, not a dependency: this package reads and writes its on-disk format with
pyarrow, PyAV and json only. `format` is the format itself (file layout, info.json, tasks,
statistics, errors), `read` the import (every episode becomes a segment), `write` the
export (a saved selection, streamed at one fps, becomes a v3.0 dataset).
"""

from roboloop.interop.lerobot.format import LeRobotExportError, LeRobotFormatError, Progress
from roboloop.interop.lerobot.read import ImportConfig, ImportReport, import_from_config, import_lerobot, segment_id_for
from roboloop.interop.lerobot.write import (
    ExportConfig,
    ExportReport,
    check_overwritable,
    export_from_config,
    export_lerobot,
    is_earlier_export,
)

__all__ = [
    "ExportConfig",
    "ExportReport",
    "ImportConfig",
    "ImportReport",
    "LeRobotExportError",
    "LeRobotFormatError",
    "Progress",
    "check_overwritable",
    "export_from_config",
    "export_lerobot",
    "import_from_config",
    "import_lerobot",
    "is_earlier_export",
    "segment_id_for",
]
