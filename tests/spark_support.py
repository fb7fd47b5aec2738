"""One small local Spark session for the whole test run, shared by the Spark tests.

``local[2]`` with two shuffle partitions, no UI and quiet logs: starting Spark costs seconds, so
every test module gets the same session from :func:`spark`. Without Java the Spark tests are
skipped on a developer's machine and fail under CI (``CI=true``), where Java is required.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest


def java_missing() -> bool:
    return shutil.which("java") is None and not os.environ.get("JAVA_HOME")


@functools.cache
def _session():
    from features.spark import spark_session

    session = spark_session("local[2]", app_name="winback-tests", conf={
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": "1g"})
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark():
    """The shared session; skips the calling test without Java unless CI is set."""
    if java_missing():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Java 17 is required for the Spark tests under CI (install openjdk-17-jre-headless)")
        pytest.skip("Java is not installed: the Spark tests need Java 17")
    return _session()
