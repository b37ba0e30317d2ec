"""A faithful fake of the Tencent CI API on loopback, for the demo, the tests and benchmarks.

model: buckets, queues, jobs, clock, with a scripted API (add_queue, create_job, ...)
api: signature checks, parameter validation and the listings, without HTTP
params: CI's error answer and the checks of query parameters, shared by the calls
workflows: workflows, their executions and batch jobs (opt-in per bucket), without HTTP
render: records -> CI's XML bodies
discovery: the bucket listings of each region's service host (`ci.<Region>.myqcloud.com`)
server: Simulator: one loopback listener per bucket and per region, request accounting
handler: a listener and its request handler (faults, accounting, routing to the Api)
faults: the faults it can inject
workload: seeded jobs that come and go on their own; build_demo()
"""

from exporter.simulator.faults import FAULT_KINDS, Fault, FaultSet
from exporter.simulator.model import Clock, SimBucket, SimJob, SimQueue
from exporter.simulator.server import RequestRecord, Simulator
from exporter.simulator.workload import (
    DEMO_SECRET_ID,
    DEMO_SECRET_KEY,
    FAILURE_CODES,
    Stream,
    Workload,
    build_demo,
)

__all__ = [
    "DEMO_SECRET_ID",
    "DEMO_SECRET_KEY",
    "FAILURE_CODES",
    "FAULT_KINDS",
    "Clock",
    "Fault",
    "FaultSet",
    "RequestRecord",
    "SimBucket",
    "SimJob",
    "SimQueue",
    "Simulator",
    "Stream",
    "Workload",
    "build_demo",
]
