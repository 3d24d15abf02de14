"""No secret reaches a member or the logs, on the bot's success and failure paths.

Recognisable secrets are set for the Stability key, the S3 credentials and the Discord
token; the bot then answers commands that succeed, that the provider refuses for the key
(401), and that storage refuses. Everything the bot sent to Discord and everything it
logged (every logger, DEBUG) is scanned.
"""

from __future__ import annotations

import json
import logging

import pytest

from abby_core.errors import ProviderAuthError, StorageUnavailable
from abby_core.generation import ImageGenerator
from tests.discord.conftest import Abby, refusal
from tests.fixtures.fake_discord import FakeDiscord
from tests.fixtures.fake_stability import FakeStability

STABILITY_SECRET = "sk-RECOGNISABLE-stability-77aa88bb99cc"
S3_SECRET = "RECOGNISABLE-s3-secret-value-0042"
S3_ACCESS = "RECOGNISABLEACCESS"
SECRETS = (STABILITY_SECRET, S3_SECRET, S3_ACCESS)
# The access key id is an identifier, not a secret: botocore's own DEBUG lines show it in the
# signed Authorization header (the bot's logging set-up keeps botocore at INFO). It must still
# never reach a member.
LOGGED_SECRETS = (STABILITY_SECRET, S3_SECRET)


def _sent(fake: FakeDiscord) -> str:
    parts = []
    for request in fake.requests:
        parts.append(json.dumps(request.json, default=str))
        parts.extend(f.data.decode("latin-1") for f in request.files if not f.data.startswith(b"\x89PNG"))
    return "\n".join(parts)


async def test_no_secret_reaches_members_or_logs(
    abby: Abby, fake_discord: FakeDiscord, fake_stability: FakeStability, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    member = fake_discord.make_member(name="ann")
    generator = ImageGenerator(STABILITY_SECRET, fake_stability.url, timeout=2, max_retries=0)
    await abby.start(
        generator=generator,
        IMAGE_PROVIDER="stability",
        STABILITY_API_KEY=STABILITY_SECRET,
        S3_ACCESS_KEY_ID=S3_ACCESS,
        S3_SECRET_ACCESS_KEY=S3_SECRET,
    )
    # The fake refuses any key but its own: a 401, the operator's problem.
    error, reply = await refusal(await fake_discord.slash("imagine", user=member, options={"prompt": "a cat"},
                                                        expect_error=True))
    assert isinstance(error, ProviderAuthError)
    assert fake_stability.routes_hit("core") == 1  # the secret key really was sent, and refused
    await (await fake_discord.slash("quota", user=member)).followup()
    assert (await abby.status(member)).daily_used == 0
    await abby.close()

    text = _sent(fake_discord) + "\n" + caplog.text + "\n" + repr(error) + str(error)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked"
    assert reply.content or reply.embeds


async def test_no_secret_when_storage_refuses(
    abby: Abby, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    member = fake_discord.make_member(name="bo")
    await abby.start(
        STORAGE_BACKEND="s3",
        S3_ENDPOINT_URL="http://127.0.0.1:9",
        S3_ACCESS_KEY_ID=S3_ACCESS,
        S3_SECRET_ACCESS_KEY=S3_SECRET,
        S3_TIMEOUT_SECONDS=1,
        S3_MAX_ATTEMPTS=1,
    )
    error, _ = await refusal(await fake_discord.slash("imagine", user=member, options={"prompt": "a dog"},
                                                   expect_error=True))
    assert isinstance(error, StorageUnavailable)
    await abby.close()
    sent = _sent(fake_discord) + "\n" + repr(error) + str(error)
    for secret in SECRETS:
        assert secret not in sent, f"{secret!r} reached a member"
    for secret in LOGGED_SECRETS:
        assert secret not in caplog.text, f"{secret!r} was logged"
