"""Observability: the metric catalog, the loop's metric recorder, accounting, dashboards.

Nothing here is imported by the worker runtime, and the dashboard builders (which need
the `dev` extra's grafana-foundation-sdk) are imported only when dashboards are generated.
"""
