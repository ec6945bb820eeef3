import pytest


@pytest.fixture(autouse=True)
def _reaper_clock_forgotten():
    """Each test starts with a reaper that has no memory of earlier passes (registry.reproductions
    .services.reaper_clock_advance): passes of other tests, at other times, are not its own."""
    from worker import broker

    broker.reaper_clock_clear()
    yield
    broker.reaper_clock_clear()
