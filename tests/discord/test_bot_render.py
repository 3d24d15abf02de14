"""The result message: quota line, and delivery per IMAGE_DELIVERY and the upload limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from abby_core.generation.base import GeneratedImage
from abby_core.generation.offline import LABEL
from abby_core.pipeline import GenerationResult
from abby_core.storage import QuotaStatus, StoredImage
from abby_discord.render import PromptInfo, mib, quota_line, render_result

NOW = datetime(2026, 11, 25, 10, 10, 10, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 26, tzinfo=UTC)
URL = "https://s3.example/abby-images/images/users/1/x.png?X-Amz-Signature=abc"


def _status() -> QuotaStatus:
    return QuotaStatus("1", 3, 5, MIDNIGHT, 12_400_000, 500_000_000, 40_000_000, 5_000_000_000)


def _result(url: str | None, size: int = 1000) -> GenerationResult:
    stored = StoredImage("images/users/1/20261125T101010Z-abcdef12.png", "1", size, NOW, "image/png", url, None)
    image = GeneratedImage(b"\x89PNG" + b"0" * (size - 4), "image/png", 7, 64, 64, "offline", "SUCCESS", LABEL)
    return GenerationResult("imagine", stored, image, _status(), "a fox", size)


def test_quota_line() -> None:
    assert quota_line(_status()) == f"3/5 today · 12.4 of 500 MB · resets <t:{int(MIDNIGHT.timestamp())}:R>"


@pytest.mark.parametrize(
    ("delivery", "url", "size", "attached", "image", "link"),
    [
        ("attach", None, 1000, True, "attachment://", False),
        ("attach", URL, 1000, True, "attachment://", False),
        ("both", URL, 1000, True, "attachment://", True),
        ("link", URL, 1000, False, URL, True),
        ("link", None, 1000, True, "attachment://", False),  # no link on filesystem storage: attach anyway
        ("attach", URL, 5000, False, URL, True),  # over the upload limit: the link stands in
        ("both", None, 5000, False, None, False),  # over the limit and no link: say so
    ],
)
def test_delivery(
    delivery: str, url: str | None, size: int, attached: bool, image: str | None, link: bool
) -> None:
    rendered = render_result(
        _result(url, size), title="Imagine", info=PromptInfo("a fox"), delivery=delivery,  # type: ignore[arg-type]
        size_limit=4000, link_ttl=3600,
    )
    embed = rendered.embed.to_dict()
    assert (rendered.file is not None) == attached
    if image is None:
        assert "image" not in embed
        assert rendered.content is not None and "too large to attach" in rendered.content
        assert "20261125T101010Z-abcdef12.png" in rendered.content and "/gallery" in rendered.content
    else:
        assert embed["image"]["url"].startswith(image)
        assert rendered.content is None
    names = [f["name"] for f in embed["fields"]]
    assert ("Link" in names) == link
    assert names[-1 if not link else -2] == "Your quota"
    assert embed["description"] == "a fox"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (10 * 1_048_576, "10 MiB"),
        (10 * 1_048_576 + 1, "10.1 MiB"),
        (1, "0.1 MiB"),
        (1_572_864, "1.5 MiB"),
        (0, "0 MiB"),
    ],
)
def test_mib_rounds_up_so_a_file_over_a_limit_never_reads_as_the_limit(size: int, text: str) -> None:
    assert mib(size) == text
