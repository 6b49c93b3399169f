"""The Rerun catalog: the client and its lifecycle (`client`), reading RRD files (`rrd`), the
catalog's errors (`errors`), restore from the workspace (`restore`), one server per workspace
(`server`), the rollout index (`index`: every rollout's properties as row files, read without a
restore), `verify`, and links that outlive the process (`links`: `roboloop open`, URLs).

`roboloop.catalog.Catalog` is the entry point users script against.
"""

from roboloop.catalog.client import Catalog, CatalogError

__all__ = ["Catalog", "CatalogError"]
