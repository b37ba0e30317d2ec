"""The benchmark suite: what the exporter costs (API calls, CPU, memory, scrape time, poll
wall time) against the least work CI's API allows and against a cron script written with
cos-python-sdk-v5. `python3 -m bench` runs it and prints the table; see docs/benchmarks.md."""
