"""The scoring service (BentoML), its OpenAPI document, paging, the full-base sync and limits; the dashboard."""
