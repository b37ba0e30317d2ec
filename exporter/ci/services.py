"""The table of CI services: where their queues and jobs are listed, and their tags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    queue_path: str
    job_path: str
    tags: tuple[str, ...]
    # Extra query parameters for the queue listing. /queue leaves out SpeedTranscoding
    # queues unless asked for every category.
    queue_params: tuple[tuple[str, str], ...] = ()


MEDIA_TAGS: tuple[str, ...] = (
    "Transcode",
    "Animation",
    "Snapshot",
    "SmartCover",
    "Concat",
    "VoiceSeparate",
    "VideoMontage",
    "SDRtoHDR",
    "VideoProcess",
    "SuperResolution",
    "Segment",
    "DigitalWatermark",
    "ExtractDigitalWatermark",
    "VideoTag",
    "MediaInfo",
    "StreamExtract",
    "QualityEstimate",
    "Tts",
    "NoiseReduction",
)

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("media", "/queue", "/jobs", MEDIA_TAGS, (("category", "CateAll"),)),
        Service(
            "ai", "/ai_queue", "/jobs", ("Translation", "SpeechRecognition", "WordsGeneralize")
        ),
        Service("speech", "/asrqueue", "/asr_jobs", ("SpeechRecognition",)),
        Service("pic", "/picqueue", "/pic_jobs", ("PicProcess", "PosterProduction")),
        Service("doc", "/docqueue", "/doc_jobs", ("DocProcess",)),
    )
}


def endpoint_family(path: str) -> str:
    """`/jobs/a,b,c` -> `/jobs`: a bounded label value for request metrics."""
    parts = path.split("/")
    return "/" + parts[1] if len(parts) > 1 else path
