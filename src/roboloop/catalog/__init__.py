"""The Rerun catalog: the client and its lifecycle (`client`), restore from the workspace
(`restore`), one server per workspace (`server`), `verify`, and links that outlive the process
(`links`: `roboloop open`, URLs, self-contained exports).

`roboloop.catalog.Catalog` is the entry point users script against.
"""

from roboloop.catalog.client import Catalog, CatalogError

__all__ = ["Catalog", "CatalogError"]
