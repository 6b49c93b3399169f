"""roboloop: the robot-learning experiment loop on one queryable data layer (a Rerun catalog)."""

__version__ = "0.1.0"
