from tests.fixtures.fake_stability import fake_stability  # noqa: F401
