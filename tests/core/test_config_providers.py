"""Provider and content-control settings: each mistake is named at start-up."""

from __future__ import annotations

import pytest

from abby_core.config import load_settings
from abby_core.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"IMAGE_PROVIDER": "comfyui"}, "COMFYUI_URL"),
        ({"IMAGE_PROVIDER": "automatic1111"}, "A1111_URL"),
        ({"IMAGE_PROVIDER": "offline", "IMAGE_PROVIDER_FALLBACK": "comfyui"}, "COMFYUI_URL"),
        ({"IMAGE_PROVIDER": "offline", "IMAGE_PROVIDER_FALLBACK": "offline"}, "IMAGE_PROVIDER_FALLBACK"),
        ({"IMAGE_PROVIDER": "automatic1111", "A1111_URL": "http://gpu:7860", "A1111_USERNAME": "me"}, "A1111_PASSWORD"),
        ({"IMAGE_PROVIDER": "comfyui", "COMFYUI_URL": "http://gpu box:8188"}, "COMFYUI_URL"),
        ({"A1111_STEPS": "0"}, "A1111_STEPS"),
        ({"COMFYUI_AUTH_HEADER_NAME": "X Bad: header"}, "COMFYUI_AUTH_HEADER_NAME"),
        ({"IMAGE_CHANNEL_IDS": "12,general"}, "IMAGE_CHANNEL_IDS"),
    ],
)
def test_provider_mistakes_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env_file=None, **env)


def test_provider_sections() -> None:
    s = load_settings(
        env_file=None,
        IMAGE_PROVIDER="comfyui",
        COMFYUI_URL="http://127.0.0.1:8188/",
        IMAGE_PROVIDER_FALLBACK="",
        A1111_URL="http://127.0.0.1:7860",
        A1111_USERNAME="me",
        A1111_PASSWORD="secret",
        PROMPT_BLOCKLIST="gore, re:bl[o0]od\nwar crime",
        IMAGE_CHANNEL_IDS="111, 222",
        IMAGE_AGE_RESTRICTED_ONLY="true",
    )
    assert (s.api.provider, s.api.fallback, s.api.comfyui.url) == ("comfyui", None, "http://127.0.0.1:8188")
    assert s.api.a1111.password is not None and "secret" not in repr(s.api.a1111)
    assert s.moderation.blocklist == ("gore", "re:bl[o0]od", "war crime")
    assert (s.moderation.channel_ids, s.moderation.age_restricted_only) == ((111, 222), True)
