"""The marketer workspace: a web dashboard mounted in the scoring service at ``/ui``."""

from serving.dashboard.app import app

__all__ = ["app"]
