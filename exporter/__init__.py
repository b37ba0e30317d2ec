"""Prometheus exporter for Tencent Cloud CI (Cloud Infinite) queues and jobs."""

__version__ = "0.1.0"
