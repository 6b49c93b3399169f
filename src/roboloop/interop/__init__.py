"""Interop with other robot-learning tools: LeRobot datasets in and out (`roboloop.interop.lerobot`)."""

from roboloop.interop.lerobot import (
    ExportConfig,
    ExportReport,
    ImportConfig,
    ImportReport,
    LeRobotFormatError,
    export_from_config,
    export_lerobot,
    import_from_config,
    import_lerobot,
)

__all__ = [
    "ExportConfig",
    "ExportReport",
    "ImportConfig",
    "ImportReport",
    "LeRobotFormatError",
    "export_from_config",
    "export_lerobot",
    "import_from_config",
    "import_lerobot",
]
