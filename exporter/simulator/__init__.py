"""A faithful fake of the Tencent CI API on loopback, for the demo, the tests and benchmarks.

model: buckets, queues, jobs, clock, with a scripted API (add_queue, create_job, ...)
records: the records (queues, jobs, steps, listing queries, the clock) and shared constants
bucket_index: a bucket's job index and every read of it (SimBucket's base)
api: signature checks, parameter validation and the listings, without HTTP
params: CI's error answer and the checks of query parameters, shared by the calls
workflows: workflows, their executions and batch jobs (opt-in per bucket), without HTTP
render: records -> CI's XML bodies
discovery: the bucket listings of each region's service host (`ci.<Region>.myqcloud.com`)
server: Simulator: one loopback listener per bucket and per region, request accounting
handler: a listener and its request handler (faults, accounting, routing to the Api)
faults: the faults it can inject
streams: seeded jobs that come and go on their own (Stream, Workload)
workload: the demo's buckets, queues and workload; build_demo()
callbacks: CI's callbacks POSTed for finished jobs and runs (CallbackSender)
callback_queue: the callbacks waiting to be sent, and the faults drawn on them
callback_bodies: the callbacks' XML and JSON bodies
"""

from exporter.simulator.faults import FAULT_KINDS, Fault, FaultSet
from exporter.simulator.model import SimBucket
from exporter.simulator.records import Clock, SimJob, SimQueue
from exporter.simulator.server import RequestRecord, Simulator
from exporter.simulator.streams import FAILURE_CODES, Stream, Workload
from exporter.simulator.workload import DEMO_SECRET_ID, DEMO_SECRET_KEY, build_demo

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
