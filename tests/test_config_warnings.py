"""What is valid but probably wrong: `--check-config` warns (one line each, exit 0) about a tag
that is not a documented tag of its service, a region that is not Tencent Cloud's, and a poll
interval shorter than the configured streams take at the configured rate limit."""

from __future__ import annotations

from pathlib import Path

from test_cli import run_cli

from exporter.config import parse_config
from exporter.config_warnings import config_warnings

ENV = {"TENCENTCLOUD_SECRET_ID": "AKIDwarnings", "TENCENTCLOUD_SECRET_KEY": "s3cr3t-warnings"}


def warnings_of(text: str) -> list[str]:
    return config_warnings(parse_config(text, "config.yml", ENV))


def target(region: str = "ap-guangzhou", services: str = "{speech: {}}", n: int = 0) -> str:
    bucket = f"example{n}-1250000000"
    return f"  - bucket: {bucket}\n    region: {region}\n    services: {services}\n"


def test_a_sound_configuration_has_no_warning() -> None:
    text = "targets:\n" + target(services="{media: {tags: [Transcode, Snapshot]}, ai: }")
    assert warnings_of(text) == []


def test_a_tag_that_is_not_documented_for_its_service() -> None:
    text = "targets:\n" + target(services="{media: {tags: [Transcode, Transcod, Nonsense]}}")

    assert warnings_of(text) == [
        "targets[0].services.media.tags[1]: 'Transcod' is not a documented tag of media"
        " (did you mean 'Transcode'?)",
        "targets[0].services.media.tags[2]: 'Nonsense' is not a documented tag of media",
    ]


def test_a_region_that_is_not_tencent_clouds() -> None:
    text = "targets:\n" + target() + target(region="ap-guangzou", n=1)

    assert warnings_of(text) == [
        "targets[1].region: 'ap-guangzou' is not a Tencent Cloud region"
        " (did you mean 'ap-guangzhou'?)"
    ]


def test_discovery_regions_and_tags_are_checked_too() -> None:
    text = (
        "discovery:\n  - regions: [ap-shanghai, ap-shangai]\n"
        "    services: {pic: {tags: [PicProces]}}\n"
    )

    assert warnings_of(text) == [
        "discovery[0].regions[1]: 'ap-shangai' is not a Tencent Cloud region"
        " (did you mean 'ap-shanghai'?)",
        "discovery[0].services.pic.tags[0]: 'PicProces' is not a documented tag of pic"
        " (did you mean 'PicProcess'?)",
    ]


def test_a_poll_interval_shorter_than_a_poll_takes_at_the_rate_limit() -> None:
    # 19 media tags: 1 queue listing + 2 x 19 job listings = 39 calls per bucket, three
    # buckets on one set of credentials share 2 calls/s (burst 2): (117 - 2) / 2 = 57.5 s.
    media = "{media: {}}"
    text = "poll_interval: 30s\nrate_limit: {requests_per_second: 2}\ntargets:\n" + "".join(
        target(services=media, n=n) for n in range(3)
    )

    assert warnings_of(text) == [
        "poll_interval: 30s is shorter than the 58s a poll takes at least: 117 calls (one"
        " queue a service, every tag) at rate_limit.requests_per_second 2; polls will run"
        " back to back"
    ]
    assert warnings_of(text.replace("30s", "60s")) == []
    # Buckets on credentials of their own each have a limit of their own.
    own = "{secret_id: AKIDother, secret_key: other-key}"
    other = target(services=media).replace("services:", f"credentials: {own}\n    services:")
    spread = text.replace(target(services=media), "", 1) + other
    assert warnings_of(spread) == [
        warnings_of(text)[0].replace("117 calls", "78 calls").replace("58s", "38s")
    ]


def test_check_config_prints_the_warnings_and_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("targets:\n" + target(region="ap-nowhere"))

    result = run_cli("--config.file", str(config), "--check-config", env=ENV)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{config}: warning: targets[0].region: 'ap-nowhere' is not a Tencent Cloud region",
        f"{config}: OK (1 target(s))",
    ]
