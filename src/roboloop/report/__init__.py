"""The self-contained HTML report of an experiment loop: data gathering (`data`), figures (`plots`), HTML (`render`).

``roboloop.report.render.write_report(catalog, eval_ids, "report.html")`` gathers, renders and writes it;
``roboloop.report.plots.plot_success`` draws a `success` table for ``roboloop success --plot``.

The package imports none of its modules: `roboloop success --plot` loads only `plots` (numpy; matplotlib when it
draws), not the report's data gathering (which reads recordings and decodes video).
"""
